"""A FastAPI app on sessionkeeper's ``SessionMiddleware`` and its dependencies, for the
FastAPI tests. ``make_app(**middleware_options)`` builds it in-process; ``app`` is the same
app built from the environment for uvicorn (``SK_STORE``: "cookie" or a store URL;
``SK_SECRET_KEY``)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from sessionkeeper.starlette import SessionMiddleware
from sessionkeeper.starlette.fastapi import CurrentUser, SessionDep


def make_app(secret_key: str = "test secret", **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key=secret_key, **options)

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        return "ok"

    @app.post("/cart/{item}")
    async def add_to_cart(item: str, session: SessionDep) -> list[str]:
        session.setdefault("cart", []).append(item)
        session.modified = True
        return list(session["cart"])

    @app.get("/cart")
    def cart(session: SessionDep) -> list[str]:  # a sync endpoint, in FastAPI's pool
        return list(session.get("cart", []))

    @app.post("/login/{user}")
    async def login(user: str, session: SessionDep) -> dict[str, str | None]:
        session.login(user)
        return {"user": session.user_id}

    @app.post("/logout")
    async def logout(session: SessionDep) -> dict[str, bool]:
        session.logout()
        return {"ok": True}

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"user": user}

    return app


def _from_environment() -> FastAPI:
    store: Any = os.environ.get("SK_STORE", "cookie")
    return make_app(os.environ.get("SK_SECRET_KEY", "test secret"),
                    store=None if store == "cookie" else store)


app = _from_environment() if os.environ.get("SK_STORE") else None
