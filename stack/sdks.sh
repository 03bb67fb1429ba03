#!/usr/bin/env bash
# Real Sentry SDK clients for the end-to-end tests: Python virtualenvs with
# pinned sentry-sdk 1.x (store endpoint) and 2.x (envelopes), from PyPI.
# Idempotent; `make test` runs it. The tests find them in
# $CYCLOPS_STACK_DIR/venvs (default .stack/venvs).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENVS=${CYCLOPS_STACK_DIR:-$ROOT/.stack}/venvs
PYTHON=${PYTHON:-python3}

command -v "$PYTHON" >/dev/null || { echo "[sdks] ERROR: $PYTHON is missing: the SDK tests need Python 3" >&2; exit 1; }
mkdir -p "$VENVS"
for pin in "sentry-sdk==1.45.1" "sentry-sdk==2.75.0"; do
  major=${pin#sentry-sdk==}
  major=${major%%.*}
  venv=$VENVS/sentry-sdk-$major
  if [ -f "$venv/.pinned" ] && [ "$(cat "$venv/.pinned")" = "$pin" ]; then
    continue
  fi
  echo "[sdks] installing $pin into $venv"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" >"$VENVS/install.log" 2>&1 || { echo "[sdks] ERROR: cannot create a venv (python3-venv missing?)" >&2; tail -5 "$VENVS/install.log" >&2; exit 1; }
  "$venv/bin/pip" install -q --disable-pip-version-check "$pin" >>"$VENVS/install.log" 2>&1 ||
    { echo "[sdks] ERROR: pip install $pin failed" >&2; tail -15 "$VENVS/install.log" >&2; exit 1; }
  echo "$pin" >"$venv/.pinned"
done
echo "[sdks] sentry-sdk 1.x and 2.x ready in $VENVS"
