"""Upstream test-suites, fetched at test time from the project's source distribution.

Nothing of them is kept in this repository: the sdist of the installed release is
downloaded from the package index once (cached under ~/.cache/sessionkeeper-upstream)
and unpacked into the test's temporary folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path(os.environ.get("SESSIONKEEPER_UPSTREAM_CACHE",
                            Path.home() / ".cache" / "sessionkeeper-upstream"))


def sdist(distribution: str) -> Path:
    """The source distribution of the installed ``distribution`` (downloaded once)."""
    version = importlib.metadata.version(distribution)
    folder = CACHE / f"{distribution}-{version}"
    found = sorted(folder.glob("*.tar.gz")) if folder.is_dir() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "--dest", str(folder), f"{distribution}=={version}"],
            check=True, timeout=300,
        )
        found = sorted(folder.glob("*.tar.gz"))
    return found[0]


def unpack_tests(distribution: str, into: Path) -> Path:
    """The ``tests`` folder of the installed release's sdist, unpacked under ``into``."""
    with tarfile.open(sdist(distribution)) as archive:
        members = [m for m in archive.getmembers() if "/tests/" in m.name]
        archive.extractall(into, members=members, filter="data")
    (tests,) = into.glob("*/tests")
    return tests
