"""Start ``streamlit run app.py`` on a free port and wait until it answers: for the browser tests and for
benchmarks/bench_results_page.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ACCESS_VARIABLES = ("IMPARTIAL_PASSWORD", "IMPARTIAL_USERS", "IMPARTIAL_USERS_FILE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_dashboard(app_root: Path, data_root: Path, log: Path, timeout_s: float, options: Sequence[str] = (),
                    environment: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` of ``app_root`` over ``data_root`` with access control off, Streamlit ``options``
    (``NAME=VALUE``) and ``environment`` added to this process's; its output goes to ``log``. Returns the process
    and its URL once the health check answers; stops it and raises RuntimeError (with the log) when it exits or
    does not answer within ``timeout_s``."""
    port = free_port()
    variables = {key: value for key, value in os.environ.items() if key not in ACCESS_VARIABLES}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false",
               *[part for option in options for part in (f"--{option.partition('=')[0]}", option.partition("=")[2])],
               "--", "--data-root", str(data_root)]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=app_root, stdout=output, stderr=subprocess.STDOUT,
                                  env={**variables, **(environment or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return server, url
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"the dashboard did not answer within {timeout_s} s:\n{log.read_text()}")


def stop_dashboard(server: subprocess.Popen) -> None:
    """Stop the server; kill it when it has not exited after 20 s."""
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
