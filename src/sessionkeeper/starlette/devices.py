"""What ``session.login()`` records of the device on ASGI, as the Flask extension's
SESSION_DEVICE_INFO: the User-Agent (cut to 256 characters) and, if asked, the client's
address, for the user's list of sessions ("your devices")."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from ..device_info import device_info


class Device:
    """The parts of a request's scope a login describes; kept with its session so that
    the login, wherever it runs, needs nothing from a context variable. (Made for every
    request that opens a session: a plain class, cheaper to build than a dataclass.)"""

    __slots__ = ("client", "fields", "headers")

    def __init__(self, scope: Scope, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        self.client: Any = scope.get("client")

    def describe(self) -> dict[str, str | None]:
        agent = next((value for key, value in self.headers if key == b"user-agent"), None)
        return device_info(self.fields, agent.decode("latin-1") if agent else None,
                           self.client[0] if self.client else None)
