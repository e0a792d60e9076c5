"""Server-side session stores. Each module holds one store; import what you use."""

from .base import RecordCodec, SessionRecord, SessionStore, SessionUpdate

__all__ = ["RecordCodec", "SessionRecord", "SessionStore", "SessionUpdate"]
