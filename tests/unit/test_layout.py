"""The repository layout keeps the standard library's `operator` importable."""

import importlib.util
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_operator_is_the_standard_library_module_not_our_folder() -> None:
    spec = importlib.util.find_spec("operator")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).parent == Path(sysconfig.get_paths()["stdlib"])


def test_both_packages_import_from_their_folders() -> None:
    for name, folder in [("apitoken_operator", "operator"), ("apitoken_service", "tokenservice")]:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin).parent.parent.name == folder
