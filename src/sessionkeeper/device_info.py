"""What a login records of the device (SESSION_DEVICE_INFO), whatever the framework: the
User-Agent, cut short, and the client's address, each only when asked for."""

from __future__ import annotations

from collections.abc import Iterable

#: longer user agents are cut: they only help a person recognise a device
MAX_USER_AGENT_LENGTH = 256


def device_info(fields: Iterable[str], user_agent: str | None,
                address: str | None) -> dict[str, str | None]:
    """The record of ``fields`` ("user_agent", "ip") for a device. ``address`` is the
    peer's: a proxy's unless the server is told to trust X-Forwarded-For (werkzeug's
    ProxyFix, uvicorn's --forwarded-allow-ips); sessionkeeper cannot know which to trust."""
    wanted = set(fields)
    info: dict[str, str | None] = {}
    if "user_agent" in wanted:
        info["user_agent"] = user_agent[:MAX_USER_AGENT_LENGTH] if user_agent else None
    if "ip" in wanted:
        info["ip"] = address
    return info
