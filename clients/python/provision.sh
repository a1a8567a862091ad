#!/usr/bin/env bash
# Provisions what the Python client's tests need, into the project's venv (.tools/venv, made
# by nats/provision.sh): the pinned test dependencies (pytest, PyPI's openfeature-sdk and
# openfeature-provider-ofrep, the client's httpx and httpx-sse), and the client itself,
# installed the way users install it (`pip install ./clients/python`).
# Idempotent: a second run with everything in place does no network work; the client is
# reinstalled only when its files change.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$root/nats/provision.sh" >/dev/null
venv="$root/.tools/venv"
pins=(
  "httpx==0.28.1"
  "httpx-sse==0.4.3"
  "pytest==9.2.0"
  "openfeature-sdk==0.10.0"
  "openfeature-provider-ofrep==0.3.0"
)

if ! "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
  echo "provisioning ${pins[*]} into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
fi

client="$root/clients/python"
# The stamp lives in the venv, so a venv made anew gets the client again.
stamp="$venv/mycosynth-python.sha256"
sum="$(cd "$client" && find pyproject.toml README.md src -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] || ! "$venv/bin/python" -c 'import mycosynth' 2>/dev/null; then
  echo "installing the mycosynth Python client into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$client" >&2
  echo "$sum" >"$stamp"
fi
echo "$venv/bin/python"
