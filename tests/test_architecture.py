"""docs/architecture.md stays true: every module and name it cites exists where it says."""

import builtins
import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from impartial.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
MODULES = sorted(path.stem for path in (ROOT / "impartial").glob("*.py") if not path.stem.startswith("__"))
CONFIG_SECTIONS = {field.name for field in dataclasses.fields(RunConfig)}
FILE_SUFFIXES = (".py", ".pt", ".json", ".csv", ".npz", ".zip", ".md", ".tif")
OUTSIDE = {"ceil", "st"}  # names of other libraries the page cites without their package (math.ceil, streamlit)
# A cited name in backticks: `name(...)`, `a.b.c` or a class or type name (`Name`); plain words are not names.
CITED = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\(|`)")


def cited_names(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(name, modules of the section that cites it) for every backticked name; section headings are
    ``### `a.py`, `b.py` ``."""
    names, section = [], ()
    for line in text.splitlines():
        if line.startswith("### "):
            section = tuple(re.findall(r"`(\w+)\.py`", line))
            continue
        for match in CITED.finditer(line):
            name, call = match.group(1), match.group(2) == "("
            named = call or "." in name or re.fullmatch(r"[A-Z][A-Za-z]*[a-z][A-Za-z]*", name)
            if named and not name.endswith(FILE_SUFFIXES):
                names.append((name, section))
    return names


def _lookup(module: str, parts: list[str]):
    """The object ``impartial.<module>.<parts...>`` (dataclass fields without defaults count), or None."""
    obj = importlib.import_module(f"impartial.{module}")
    for part in parts:
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and part in _field_names(obj):
            return obj
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def _field_names(kind: type) -> set[str]:
    return {field.name for field in dataclasses.fields(kind)}


def problem_with(name: str, section: tuple[str, ...]) -> str | None:
    """Why the page's ``name`` (cited in a section about ``section``'s modules) is wrong; None when it is right."""
    parts = name.split(".")
    if parts[0] == "impartial":
        parts = parts[1:]
    if parts[0] in CONFIG_SECTIONS and len(parts) == 2:  # a setting, like train.precision
        return None if hasattr(getattr(RunConfig(), parts[0]), parts[1]) else f"no setting {name}"
    if parts[0] == "dashboard":  # the Streamlit helpers: dashboard.<module>.<name>
        module = importlib.import_module(".".join(parts[:2]))
        return None if hasattr(module, parts[2]) else f"{name} is not in {module.__name__}"
    elsewhere = parts[0] not in MODULES and importlib.util.find_spec(parts[0]) is not None
    if parts[0] in OUTSIDE or hasattr(builtins, parts[0]) or elsewhere:
        return None  # torch.load, os.replace, distributed.Client ...
    if parts[0] in MODULES:
        places = [(parts[0], parts[1:])]
    else:
        places = [(module, parts) for module in section] + [(module, parts) for module in MODULES]
    for module, rest in places:
        obj = _lookup(module, rest)
        if obj is None:
            continue
        home = obj.__module__ if inspect.isfunction(obj) or inspect.isclass(obj) else None
        if len(rest) == 1 and home and home != f"impartial.{module}":
            continue  # imported there, defined elsewhere: keep looking for where it lives
        if section and module not in section and parts[0] not in MODULES and len(rest) == 1:
            return f"{name} is cited under {', '.join(section)} but lives in {module}"
        return None
    return f"{name} is not in {', '.join(section) or 'impartial'}"


def test_every_module_the_page_names_is_a_module():
    headings = [name for line in DOC.read_text().splitlines() if line.startswith("### ")
                for name in re.findall(r"`(\w+)\.py`", line)]
    assert headings and set(headings) <= set(MODULES)


def test_every_module_is_on_the_page():
    text = DOC.read_text()
    assert [module for module in MODULES if not re.search(rf"\b{module}\b", text)] == []


@pytest.mark.parametrize("name, section", sorted(set(cited_names(DOC.read_text()))))
def test_every_cited_name_exists_where_the_page_says(name, section):
    assert problem_with(name, section) is None, problem_with(name, section)


def test_a_name_in_the_wrong_module_is_caught():
    assert problem_with("read_files_csv", ("io",)) is not None  # lives in dataset.py
    assert problem_with("pick_device", ("model",)) is not None  # lives in device.py
    assert problem_with("io.read_files_csv", ()) is not None
    assert problem_with("train.presicion", ()) is not None
    assert problem_with("dashboard.state.user_error", ()) is not None
    assert problem_with("read_files_csv", ("dataset",)) is None
