"""Helpers shared by store providers."""

from __future__ import annotations

import secrets


def random_prefix(kind: str) -> str:
    """A key prefix no other test uses, so tests never see each other's sessions."""
    return f"sktest:{kind}:{secrets.token_hex(4)}:"
