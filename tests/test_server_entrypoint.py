"""Facts about the Docker image read from the Dockerfile (no Docker needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def _arguments(instruction: str) -> list[str]:
    return [arguments for name, arguments in _instructions() if name == instruction]


def test_base_image_is_a_build_argument_defaulting_to_slim_python():
    instructions = _instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert ("FROM", "${BASE_IMAGE}") in instructions


def test_runs_as_non_root_user_1000():
    assert _arguments("USER")[-1] in ("1000", "1000:1000")


def test_projects_live_on_the_data_volume():
    assert _arguments("VOLUME") == ["/data"]
    assert "IMPARTIAL_DATA=/data" in _arguments("ENV")
    assert _arguments("EXPOSE") == ["8501"]


def test_healthcheck_asks_streamlit_health_endpoint_with_python():
    (healthcheck,) = _arguments("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "http://localhost:8501/_stcore/health" in command[2]


def test_cmd_starts_streamlit_on_port_8501_on_all_interfaces():
    command = json.loads(_arguments("CMD")[-1])
    assert command[:3] == ["streamlit", "run", "app.py"]
    assert "--server.port=8501" in command and "--server.address=0.0.0.0" in command


def test_installs_from_requirements_without_pip_cache():
    runs = " ".join(_arguments("RUN"))
    assert "pip install --no-cache-dir -r requirements.txt" in runs
    assert "pip install" not in runs.replace("pip install --no-cache-dir", "")


def test_secrets_and_local_data_stay_out_of_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".streamlit/secrets.toml", ".venv", ".git", "impartial-data"} <= set(ignored)
