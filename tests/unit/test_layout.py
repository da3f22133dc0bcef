"""The repository layout keeps the standard library's `operator` importable."""

import importlib.util
import sysconfig
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_operator_is_the_standard_library_module_not_our_folder() -> None:
    spec = importlib.util.find_spec("operator")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).parent == Path(sysconfig.get_paths()["stdlib"])


def test_every_package_imports_from_its_folder() -> None:
    for name, folder in [
        ("apitoken_operator", "operator"),
        ("apitoken_service", "tokenservice"),
        ("apitokenctl", "ctl"),
    ]:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin).parent.parent.name == folder


def test_every_operator_module_has_a_layer_in_the_import_contracts() -> None:
    """A new module must say which layer it belongs to, or import-linter would not check it.
    Only the Kopf layer (handlers, cli) may import everything."""
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    layered = {
        module
        for contract in config["tool"]["importlinter"]["contracts"]
        for module in contract.get("source_modules", [])
    }
    modules = {
        f"apitoken_operator.{path.stem}"
        for path in (root / "operator" / "apitoken_operator").glob("*.py")
        if path.stem not in {"__init__", "cli", "handlers"}
    }
    assert modules - layered == set()
