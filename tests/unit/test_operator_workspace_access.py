"""ClusterTokenWorkspace.allowedNamespaces: names and a label selector over namespaces."""

import pytest

from apitoken_operator.core.apitoken.namespaces import namespace_allowed
from apitoken_operator.crd.resources import AllowedNamespaces

pytestmark = pytest.mark.unit


def allowed(**spec: object) -> AllowedNamespaces:
    return AllowedNamespaces.model_validate(spec)


TEAM_A = {"team": "a", "env": "prod"}


@pytest.mark.parametrize(
    ("rule", "namespace", "labels", "expected"),
    [
        (None, "any", {}, True),
        (allowed(names=["apps"]), "apps", {}, True),
        (allowed(names=["apps"]), "other", TEAM_A, False),
        (allowed(selector={}), "other", {}, True),
        (allowed(selector={"matchLabels": {"team": "a"}}), "x", TEAM_A, True),
        (allowed(selector={"matchLabels": {"team": "b"}}), "x", TEAM_A, False),
        (allowed(selector={"matchLabels": {"team": "a", "env": "dev"}}), "x", TEAM_A, False),
        (
            allowed(
                selector={
                    "matchExpressions": [
                        {"key": "env", "operator": "In", "values": ["prod", "stage"]}
                    ]
                }
            ),
            "x",
            TEAM_A,
            True,
        ),
        (
            allowed(
                selector={
                    "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
                }
            ),
            "x",
            TEAM_A,
            False,
        ),
        (
            allowed(
                selector={
                    "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
                }
            ),
            "x",
            {},
            True,
        ),
        (
            allowed(selector={"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
            "x",
            TEAM_A,
            True,
        ),
        (
            allowed(selector={"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
            "x",
            {},
            False,
        ),
        (
            allowed(selector={"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}),
            "x",
            TEAM_A,
            False,
        ),
        (
            allowed(names=["apps"], selector={"matchLabels": {"team": "b"}}),
            "apps",
            TEAM_A,
            True,
        ),
        (allowed(names=["apps"], selector={"matchLabels": {"team": "a"}}), "x", TEAM_A, True),
        (allowed(names=[]), "x", TEAM_A, False),
    ],
    ids=[
        "no-restriction-allows-all",
        "listed-name",
        "unlisted-name",
        "empty-selector-matches-all",
        "match-labels",
        "match-labels-wrong-value",
        "match-labels-needs-all",
        "in",
        "not-in-excludes",
        "not-in-allows-missing-key",
        "exists",
        "exists-missing",
        "does-not-exist",
        "name-or-selector-by-name",
        "name-or-selector-by-selector",
        "empty-names-allow-none",
    ],
)
def test_namespace_allowed(
    rule: AllowedNamespaces | None, namespace: str, labels: dict[str, str], expected: bool
) -> None:
    assert namespace_allowed(rule, namespace, labels) is expected
