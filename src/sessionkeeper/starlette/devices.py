"""What ``session.login()`` records of the device on ASGI, as the Flask extension's
SESSION_DEVICE_INFO: the User-Agent (cut to 256 characters) and, if asked, the client's
address, for the user's list of sessions ("your devices")."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

MAX_USER_AGENT_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Device:
    """The parts of a request's scope a login describes; kept with its session so that
    the login, wherever it runs, needs nothing from a context variable."""

    fields: tuple[str, ...]
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None

    @classmethod
    def of(cls, scope: Scope, fields: tuple[str, ...]) -> Device:
        return cls(fields, scope.get("headers", []), scope.get("client"))

    def describe(self) -> dict[str, str | None]:
        info: dict[str, str | None] = {}
        if "user_agent" in self.fields:
            agent = next((value for key, value in self.headers if key == b"user-agent"), None)
            info["user_agent"] = (agent.decode("latin-1")[:MAX_USER_AGENT_LENGTH]
                                  if agent else None)
        if "ip" in self.fields:
            # The peer's address: a proxy's, unless the server is told to trust
            # X-Forwarded-For (uvicorn --forwarded-allow-ips, ProxyHeadersMiddleware).
            info["ip"] = self.client[0] if self.client else None
        return info
