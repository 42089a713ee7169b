"""The transformers range unforget declares: bounded above (transformers removes names it deprecated, e.g. 5.40 the
``past_key_values`` keyword rank mode used to pass), and the installed transformers, the one the suite runs
on, inside it. Read from the installed package's metadata (what pip resolves against), checked against
pyproject.toml so that a stale install cannot hide an edit."""

import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def transformers_requirement(lines: list[str]) -> Requirement:
    found = [r for r in map(Requirement, lines) if r.name == "transformers" and r.marker is None]
    assert len(found) == 1, lines
    return found[0]


def test_transformers_has_an_upper_bound_that_the_installed_version_meets():
    declared = transformers_requirement(importlib.metadata.requires("unforget") or [])
    assert any(s.operator in ("<", "<=", "==", "~=") for s in declared.specifier), (
        f"unforget declares {declared} with no upper bound: bound it below the next transformers release that "
        "removes what it deprecated")
    installed = importlib.metadata.version("transformers")
    assert declared.specifier.contains(installed, prereleases=True), (
        f"transformers {installed} is installed, outside the declared {declared.specifier}")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is in the standard library from Python 3.11")
def test_the_installed_metadata_declares_what_pyproject_declares():
    import tomllib

    in_pyproject = transformers_requirement(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    installed = transformers_requirement(importlib.metadata.requires("unforget") or [])
    assert in_pyproject.specifier == installed.specifier, (
        f"pyproject.toml declares {in_pyproject}, the installed unforget {installed}: reinstall it "
        "(pip install -e .)")
