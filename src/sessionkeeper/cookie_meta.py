"""sessionkeeper's own entry in a cookie session: who is bound, since when, which login.

It is written only when there is something to say (a bound user, or a creation time
for SESSION_ABSOLUTE_TIMEOUT), so an anonymous cookie stays byte for byte what Flask's
own session would send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import RESERVED_PREFIX

META_KEY = RESERVED_PREFIX + "meta"


@dataclass(frozen=True)
class CookieMeta:
    user_id: str | None = None
    bound_at: float | None = None
    handle: str | None = None
    created_at: float | None = None

    @classmethod
    def take_from(cls, data: dict[str, Any]) -> CookieMeta:
        """Remove the entry from a cookie's payload; ValueError when it is malformed."""
        raw = data.pop(META_KEY, None)
        if raw is None:
            return _NONE  # an anonymous session's cookie: most of them
        if not isinstance(raw, dict):
            raise ValueError("sessionkeeper's cookie entry is not a mapping")
        user_id, handle = raw.get("u"), raw.get("h")
        bound_at, created_at = raw.get("b"), raw.get("c")
        if not all(isinstance(v, str | None) for v in (user_id, handle)) or not all(
                _is_time(v) for v in (bound_at, created_at)):
            raise ValueError("sessionkeeper's cookie entry has fields of the wrong type")
        return cls(user_id, _time(bound_at), handle, _time(created_at))

    def as_payload(self) -> dict[str, Any] | None:
        fields = {"u": self.user_id, "b": self.bound_at, "h": self.handle, "c": self.created_at}
        kept = {name: value for name, value in fields.items() if value is not None}
        return kept or None


def _is_time(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


#: the entry of a cookie that has none (immutable, so one serves every request)
_NONE = CookieMeta()
