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


ENTRY_POINTS = {"__init__", "__main__", "cli", "runtime", "settings", "metrics"}


def _layers(package: str = "apitoken_operator") -> list[str]:
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (layered,) = [
        c for c in contracts if c["type"] == "layers" and c["layers"][0].startswith(package + ".")
    ]
    return [
        name.strip() for layer in layered["layers"] for name in layer.replace(":", "|").split("|")
    ]


def test_only_entry_points_sit_at_the_package_root() -> None:
    """Every other module lives in the package of its layer, where the contract sees it."""
    root = Path(__file__).resolve().parents[2] / "operator" / "apitoken_operator"
    assert {path.stem for path in root.glob("*.py")} - ENTRY_POINTS == set()


def test_every_operator_package_is_a_layer_of_the_contract() -> None:
    """A new package must take its place in the layers, or import-linter would not check it."""
    root = Path(__file__).resolve().parents[2] / "operator" / "apitoken_operator"
    packages = {f"apitoken_operator.{path.parent.name}" for path in root.glob("*/__init__.py")}
    modules = {f"apitoken_operator.{path.stem}" for path in root.glob("*.py")} - {
        "apitoken_operator.__init__"
    }
    assert (packages | modules) - set(_layers()) == set()


def test_every_token_service_package_is_a_layer_of_the_contract() -> None:
    """The service's packages (api, pages, storage, domain) are layered; its root modules are
    the start-up code and small helpers that every layer may use."""
    root = Path(__file__).resolve().parents[2] / "tokenservice" / "apitoken_service"
    packages = {f"apitoken_service.{path.parent.name}" for path in root.glob("*/__init__.py")}
    assert packages - set(_layers("apitoken_service")) == set()
