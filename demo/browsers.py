"""A browser's name and system from its User-Agent header, as a person recognises them:
"Chrome on Windows", "Safari on iOS". Deliberately simple: a few products matched by the
tokens they send, most specific first; anything else shows its first product name.
"""

from __future__ import annotations

import re

UNKNOWN = "unknown browser"
MAX_NAME = 40  # characters of an unrecognised product name shown

# Order matters: Edge and Opera also send "Chrome/", and Chrome also sends "Safari/".
_BROWSERS = (
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"\b(?:OPR|OPiOS)/")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS|Chromium)/")),  # HeadlessChrome/ too
    ("Safari", re.compile(r"\bSafari/")),
)
# iOS and Android before macOS and Linux: their user agents say "like Mac OS X", "Linux".
_SYSTEMS = (
    ("iOS", re.compile(r"\b(?:iPhone|iPad|iPod)\b")),
    ("Android", re.compile(r"\bAndroid\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("macOS", re.compile(r"\bMacintosh\b|\bMac OS X\b")),
    ("Linux", re.compile(r"\bLinux\b|\bX11\b")),
)


def _first(patterns: tuple[tuple[str, re.Pattern[str]], ...], agent: str) -> str | None:
    return next((name for name, pattern in patterns if pattern.search(agent)), None)


def browser_name(user_agent: str | None) -> str:
    """``"Chrome on Linux"``; an unrecognised client by its product name (``curl``)."""
    agent = (user_agent or "").strip()
    if not agent:
        return UNKNOWN
    browser = _first(_BROWSERS, agent)
    if browser is None:
        product = agent.split()[0].split("/")[0]
        browser = product if len(product) <= MAX_NAME else product[:MAX_NAME] + "…"
    system = _first(_SYSTEMS, agent)
    return f"{browser} on {system}" if system else browser
