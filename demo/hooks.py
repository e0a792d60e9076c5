"""Request hooks that log each request's life, and the tutorials' custom error pages."""

from __future__ import annotations

from flask import Flask, Response, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

NOT_FOUND_PAGE = "<h1>I can't find my way home</h1>"
SERVER_ERROR_PAGE = ("<h1>Server error, please contact the administrator. "
                     "The administrator's phone number is 1111</h1>")


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
    """Plain pages: they must not need the session, which may be the thing that failed."""

    @app.errorhandler(404)
    def not_found(error: HTTPException) -> ResponseReturnValue:
        return NOT_FOUND_PAGE, 404

    @app.errorhandler(500)
    def server_error(error: HTTPException) -> ResponseReturnValue:
        return SERVER_ERROR_PAGE, 500
