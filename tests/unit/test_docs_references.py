"""The docs name tests as `tests/<path>.py::test_name`; every such name must exist, so the
invariants page cannot keep pointing at a test that was renamed or removed."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def references() -> list[tuple[str, str, str]]:
    return [
        (doc.name, path, name)
        for doc in sorted((ROOT / "docs").glob("*.md"))
        for path, name in REFERENCE.findall(doc.read_text())
    ]


def test_the_invariants_page_names_tests() -> None:
    assert len([r for r in references() if r[0] == "invariants.md"]) >= 30


@pytest.mark.parametrize(("doc", "path", "name"), references())
def test_every_named_test_exists(doc: str, path: str, name: str) -> None:
    source = (ROOT / path).read_text()
    assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{doc}: {path}::{name}"
