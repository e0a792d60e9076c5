"""When sessions expire and when a read-only request refreshes them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

MAX_COOKIE_AGE = 400 * 24 * 3600  # browsers cap cookie lifetimes at 400 days (RFC 6265bis)


@dataclass(frozen=True)
class ExpiryPolicy:
    """Lifetime (PERMANENT_SESSION_LIFETIME), idle and absolute timeouts, refresh throttle.

    ``refresh_fraction``: a read-only request extends the session only when this fraction
    of its window (idle timeout, or lifetime) has passed since the last write or refresh,
    so reads cost no store write almost always.
    """

    lifetime: float
    idle_timeout: float | None = None
    absolute_timeout: float | None = None
    refresh_each_request: bool = True
    refresh_fraction: float = 0.1

    @cached_property  # read several times per request; a policy never changes (frozen)
    def window(self) -> float:
        """How long a session lives after its last activity."""
        if self.idle_timeout is not None:
            return min(self.idle_timeout, self.lifetime)
        return self.lifetime

    def expires_at(self, created_at: float, now: float) -> float:
        end = now + self.window
        if self.absolute_timeout is not None:
            end = min(end, created_at + self.absolute_timeout)
        return end

    def is_expired(self, created_at: float, expires_at: float, now: float,
                   accessed_at: float | None = None) -> bool:
        """Whether a session is over at ``now`` under this policy.

        ``expires_at`` was computed with the policy in force when the session was last
        written, so the timeouts are checked again against the times it keeps: a
        restart with a shorter (or newly set) idle timeout or lifetime ends sessions
        left unused for longer than the new window, whatever ``expires_at`` says.
        """
        if expires_at <= now:
            return True
        if accessed_at is not None and accessed_at + self.window <= now:
            return True
        return self.absolute_timeout is not None and now >= created_at + self.absolute_timeout

    def should_refresh(self, created_at: float, accessed_at: float, now: float) -> bool:
        if not self.refresh_each_request:
            return False
        # A fraction of the window (idle timeout included), not of the lifetime:
        # is_expired() counts the window from accessed_at, which only writes and refreshes
        # move, so a session in use is refreshed before it could time out.
        if now - accessed_at < self.window * self.refresh_fraction:
            return False
        # Past the absolute cap a refresh cannot extend anything.
        return self.absolute_timeout is None or accessed_at < created_at + self.absolute_timeout

    @staticmethod
    def cookie_max_age(expires_at: float, now: float) -> int:
        return max(0, min(int(expires_at - now), MAX_COOKIE_AGE))
