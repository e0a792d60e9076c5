#!/usr/bin/env bash
# Install dynalite (a DynamoDB-compatible server on Node.js, from the npm registry) where
# tests/servers.py looks for it. Idempotent: does nothing when the pinned major version is
# already there; exits non-zero with a clear message when it cannot be installed.
set -euo pipefail

PREFIX=/opt/sessionkeeper-node
BIN="$PREFIX/node_modules/.bin/dynalite"
MAJOR=4

say() { printf '[dynalite] %s\n' "$*"; }
die() { printf '[dynalite] ERROR: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found: install Node.js (18 or newer)"
command -v npm >/dev/null 2>&1 || die "npm not found: install npm with Node.js"

installed() {
    [ -x "$BIN" ] || return 1
    local version
    version=$(node -p "require('$PREFIX/node_modules/dynalite/package.json').version" \
        2>/dev/null) || return 1
    [ "${version%%.*}" = "$MAJOR" ]
}

if installed; then
    say "dynalite is installed in $PREFIX"
else
    say "npm install --prefix $PREFIX dynalite@$MAJOR"
    npm install --prefix "$PREFIX" --no-audit --no-fund "dynalite@$MAJOR" \
        || die "npm install of dynalite failed"
    installed || die "dynalite is not at $BIN after npm install"
fi
# It must start, not just be on disk (its LevelDB bindings are native code).
"$BIN" --help >/dev/null 2>&1 || die "$BIN does not run"
say "ready: $BIN"
