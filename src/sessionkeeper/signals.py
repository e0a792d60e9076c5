"""Session lifecycle signals (blinker, as Flask uses).

Receivers get the sender (the backend) and keyword arguments ``log_id`` (a salted hash
of the session id, safe to log; ``"-"`` for cookie sessions, which have no id),
``user_id`` and, for ``session_regenerated``, ``old_log_id``; ``session_revoked`` adds
``handle`` (cookie sessions: ``scope``), ``session_expired`` of a cookie session and
``session_rejected`` a ``reason``. Session ids themselves are never sent.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

session_created = _signals.signal("session-created")
session_regenerated = _signals.signal("session-regenerated")
session_destroyed = _signals.signal("session-destroyed")
session_expired = _signals.signal("session-expired")
session_revoked = _signals.signal("session-revoked")
session_rejected = _signals.signal("session-rejected")  # a bad or unknown cookie came in
