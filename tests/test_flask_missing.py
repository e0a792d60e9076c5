"""Without Flask installed, ``import sessionkeeper.flask`` says how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Loaded before anything else in the child: Flask (and werkzeug) look uninstalled.
BLOCKER = textwrap.dedent("""
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"flask", "werkzeug"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
""")


def run_without_flask(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_import_without_flask_names_the_extra(tmp_path: Path) -> None:
    result = run_without_flask(tmp_path, textwrap.dedent("""
        try:
            import flask
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the blocker did not hide Flask")
        import sessionkeeper  # the core needs no Flask
        try:
            import sessionkeeper.flask
        except ModuleNotFoundError as exc:  # still an ImportError for code that checks
            print(f"{type(exc).__name__}|{exc.name}|{exc}")
    """))
    assert result.returncode == 0, result.stderr
    kind, name, message = result.stdout.strip().split("|", 2)
    assert (kind, name) == ("ModuleNotFoundError", "flask")
    assert "pip install 'sessionkeeper[flask]'" in message


@pytest.mark.parametrize("module", ["sessionkeeper.flask", "sessionkeeper.flask.extension"])
def test_import_without_flask_fails_with_the_hint_in_the_traceback(tmp_path: Path,
                                                                   module: str) -> None:
    result = run_without_flask(tmp_path, f"import {module}")
    assert result.returncode == 1
    assert "pip install 'sessionkeeper[flask]'" in result.stderr.splitlines()[-1]
