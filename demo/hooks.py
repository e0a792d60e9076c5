"""Request hooks that log each request's life, and the tutorials' custom error pages."""

from __future__ import annotations

from flask import Flask, Response, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

NOT_FOUND_HEADING = "I can't find my way home"
SERVER_ERROR_HEADING = ("Server error, please contact the administrator. "
                        "The administrator's phone number is 1111")


def register_hooks(app: Flask) -> None:
    """Log before, after and at the teardown of every request (paths as repr: no log forging)."""

    @app.before_request
    def log_before_request() -> None:
        app.logger.info("before_request %s %r", request.method, request.path)

    @app.after_request
    def log_after_request(response: Response) -> Response:
        app.logger.info("after_request %s %r -> %s", request.method, request.path,
                        response.status_code)
        return response

    @app.teardown_request
    def log_teardown_request(error: BaseException | None) -> None:
        # Runs even when the view raised: the place to release what a request held.
        app.logger.info("teardown_request %s %r error=%r", request.method, request.path, error)


def register_error_pages(app: Flask) -> None:
    """The tutorials' custom pages, in the site's layout (title, navigation, a way home).

    They never touch the session, which may be the very thing that failed: the layout
    leaves out the flashes and the log-out button (``plain``).
    """

    def page(title: str, heading: str) -> str:
        return render_template("error.html", title=title, heading=heading, plain=True)

    @app.errorhandler(404)
    def not_found(error: HTTPException) -> ResponseReturnValue:
        return page("Page not found", NOT_FOUND_HEADING), 404

    @app.errorhandler(405)
    def method_not_allowed(error: HTTPException) -> ResponseReturnValue:
        allowed = getattr(error, "valid_methods", None) or []
        # Keep the Allow header werkzeug's own 405 would send.
        headers = {"Allow": ", ".join(allowed)} if allowed else {}
        return page("Method not allowed", f"{request.method} is not allowed here"), 405, headers

    @app.errorhandler(500)
    def server_error(error: HTTPException) -> ResponseReturnValue:
        return page("Server error", SERVER_ERROR_HEADING), 500
