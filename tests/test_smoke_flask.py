"""The seeds' basic session usage works on every store kind."""

from __future__ import annotations

from typing import Any

from flask import session


def test_login_kept_across_requests_and_logout(make_app: Any, app_config: dict[str, Any]) -> None:
    app = make_app(app_config)

    @app.route("/login", methods=["POST"])
    def login() -> str:
        session["username"] = "laowang"
        return "ok"

    @app.route("/")
    def index() -> str:
        return f"welcome {session['username']}" if "username" in session else "please log in"

    @app.route("/logout")
    def logout() -> str:
        session.pop("username", None)
        return "bye"

    client = app.test_client()
    assert client.get("/").text == "please log in"
    client.post("/login")
    assert client.get("/").text == "welcome laowang"
    response = client.get("/logout")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert client.get("/").text == "please log in"
