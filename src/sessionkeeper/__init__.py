"""sessionkeeper: HTTP state keeping for Python web apps - cookies and sessions done right.

The core here is framework-agnostic; ``sessionkeeper.flask`` plugs it into Flask.
"""

from .backend import CookieUpdate, SessionBackend
from .client_side import CookieSessions
from .errors import (
    ConfigurationError,
    SessionKeeperError,
    SessionTooLarge,
    StoreUnavailable,
    UnserializableValue,
)
from .factory import build_backend
from .ids import SessionIds, storage_key
from .model import Session
from .policy import ExpiryPolicy
from .serialization import ValueCodec
from .server_side import ServerSideSessions
from .settings import Settings
from .signing import CookieSigner, IdSigner, KeyRing

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "CookieSessions",
    "CookieSigner",
    "CookieUpdate",
    "ExpiryPolicy",
    "IdSigner",
    "KeyRing",
    "ServerSideSessions",
    "Session",
    "SessionBackend",
    "SessionIds",
    "SessionKeeperError",
    "SessionTooLarge",
    "Settings",
    "StoreUnavailable",
    "UnserializableValue",
    "ValueCodec",
    "build_backend",
    "storage_key",
]
