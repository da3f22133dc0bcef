"""The ApiToken finalizer's JSON patches (`kube.finalizers`): others' finalizers untouched, a
concurrent change refused by a test."""

from typing import Any

import jsonpatch
import pytest

from apitoken_operator.kube.finalizers import add_patch, remove_patch

pytestmark = pytest.mark.unit

OURS = "apitoken.dev/finalizer"


def obj(*finalizers: str, version: str = "7") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "billing", "resourceVersion": version}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return {"metadata": meta}


def test_adding_keeps_the_others_and_tests_the_version() -> None:
    for before in (obj(), obj("other.io/x")):
        patch = add_patch(before, OURS)
        assert patch is not None
        after = jsonpatch.apply_patch(before, patch)
        assert after["metadata"]["finalizers"] == [*before["metadata"].get("finalizers", []), OURS]
        with pytest.raises(jsonpatch.JsonPatchTestFailed):
            jsonpatch.apply_patch(obj(version="8"), patch)  # changed since it was read
    assert add_patch(obj(OURS), OURS) is None


def test_removing_takes_only_ours_and_only_while_it_is_at_that_index() -> None:
    before = obj("other.io/x", OURS, "other.io/y")
    patch = remove_patch(before, OURS)
    assert patch is not None
    after = jsonpatch.apply_patch(before, patch)
    assert after["metadata"]["finalizers"] == ["other.io/x", "other.io/y"]
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(obj(OURS, "other.io/y"), patch)  # the list moved since
    assert remove_patch(obj("other.io/x"), OURS) is None
