#!/usr/bin/env bash
# One command: install everything the tests need (Python packages, Debian's chromium for the
# browser test), lint, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if [ ! -x /usr/bin/chromium ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check impartial dashboard views tests benchmarks app.py
export IMPARTIAL_SCREENSHOTS=${IMPARTIAL_SCREENSHOTS:-$PWD/artifacts/screenshots}
.venv/bin/python -m pytest "$@"
