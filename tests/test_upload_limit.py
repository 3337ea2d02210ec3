"""The 200 MB upload limit: the same number in Streamlit's config and in the dashboard's own check."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from impartial.access import MAX_UPLOAD_MB, check_upload_size
from impartial.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
MB = 1000 * 1000  # Streamlit's browser counts maxUploadSize in decimal megabytes (except on Windows)


def test_limit_is_200_mb_and_matches_streamlit_config():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert MAX_UPLOAD_MB == 200
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB


def test_files_up_to_the_limit_pass():
    check_upload_size("empty.tif", 0)
    check_upload_size("exactly.tif", 200_000_000)


def test_the_limit_is_the_200_000_000_bytes_streamlit_enforces_not_200_mib():
    with pytest.raises(InputError, match="200.1 MB is larger"):
        check_upload_size("just_over.tif", 200_000_001)


def test_one_byte_over_the_limit_is_refused_with_the_file_name():
    with pytest.raises(InputError) as error:
        check_upload_size("slide_01.ome.tif", 200 * MB + 1)
    assert error.value.path == "slide_01.ome.tif"
    assert str(error.value) == "slide_01.ome.tif: 200.1 MB is larger than the 200 MB upload limit"


def test_message_gives_the_size_in_whole_megabytes_when_it_is_whole():
    with pytest.raises(InputError, match=r"^big\.tif: 250 MB is larger than the 200 MB upload limit$"):
        check_upload_size("big.tif", 250 * MB)


def test_server_config_is_headless_and_private():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["headless"] is True
    assert config["server"]["runOnSave"] is False
    assert config["server"]["fileWatcherType"] == "none"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["toolbarMode"] == "minimal"
