"""The CRD files: structural, described, validated, and in step with the pydantic models.

The real apiserver's view of them (CEL behaviour, admission errors) is tested end to end; these
checks catch a missing description, column or rule before a cluster is needed.
"""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from apitoken_operator.crd import resources as models
from apitoken_operator.crd.durations import parse_duration

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
FILES = {
    "ApiToken": "apitoken.dev_apitokens.yaml",
    "TokenWorkspace": "apitoken.dev_tokenworkspaces.yaml",
    "ClusterTokenWorkspace": "apitoken.dev_clustertokenworkspaces.yaml",
}
KINDS = list(FILES)


def load(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / FILES[kind]).read_text())
    assert isinstance(doc, dict)
    return doc


def version(kind: str) -> dict[str, Any]:
    versions = load(kind)["spec"]["versions"]
    assert len(versions) == 1
    result = versions[0]
    assert isinstance(result, dict)
    return result


def schema(kind: str) -> dict[str, Any]:
    result = version(kind)["schema"]["openAPIV3Schema"]
    assert isinstance(result, dict)
    return result


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from walk(extra, f"{path}{{}}")


def rules(kind: str) -> list[dict[str, Any]]:
    return [r for _, node in walk(schema(kind)) for r in node.get("x-kubernetes-validations", [])]


def test_every_crd_file_is_listed() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(FILES.values())


@pytest.mark.parametrize("kind", KINDS)
def test_names_group_and_version(kind: str) -> None:
    crd = load(kind)
    names = crd["spec"]["names"]
    assert crd["spec"]["group"] == "apitoken.dev"
    assert crd["metadata"]["name"] == f"{names['plural']}.apitoken.dev"
    assert names["kind"] == kind
    assert names["listKind"] == f"{kind}List"
    assert names["categories"] == ["apitoken-operator"]
    v = version(kind)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("kind", "scope", "short"),
    [
        ("ApiToken", "Namespaced", "apitok"),
        ("TokenWorkspace", "Namespaced", "tokws"),
        ("ClusterTokenWorkspace", "Cluster", "ctokws"),
    ],
    ids=KINDS,
)
def test_scope_and_short_names(kind: str, scope: str, short: str) -> None:
    crd = load(kind)
    assert crd["spec"]["scope"] == scope
    assert crd["spec"]["names"]["shortNames"] == [short]


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_type_and_a_description(kind: str) -> None:
    missing_type = []
    missing_description = []
    for path, node in walk(schema(kind)):
        if path == ".metadata":
            continue  # the apiserver owns metadata's schema
        if "type" not in node:
            missing_type.append(path)
        scalar_member = path.endswith(("[]", "{}")) and node.get("type") != "object"
        if not scalar_member and not node.get("description", "").strip():
            missing_description.append(path or "<root>")
    assert missing_type == []
    assert missing_description == []


@pytest.mark.parametrize("kind", KINDS)
def test_no_schema_defaults_so_gitops_sees_no_diff(kind: str) -> None:
    assert [path for path, node in walk(schema(kind)) if "default" in node] == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_cel_rule_has_a_readable_message(kind: str) -> None:
    found = rules(kind)
    assert found, "each kind has at least one CEL rule"
    for rule in found:
        assert len(rule.get("message", "")) > 20, rule


def test_api_token_cel_rules_guard_disabled_and_secret_name() -> None:
    spec_rules = [
        r["rule"] for r in schema("ApiToken")["properties"]["spec"]["x-kubernetes-validations"]
    ]
    root_rules = [r["rule"] for r in schema("ApiToken")["x-kubernetes-validations"]]
    disabled = [r for r in spec_rules if "oldSelf.disabled" in r]
    assert len(disabled) == 1 and "self.disabled" in disabled[0]
    secret_name = [r for r in root_rules if "oldSelf.spec.secretName" in r]
    assert len(secret_name) == 1 and "self.metadata.name" in secret_name[0]
    assert any("duration(self.renewBefore).getHours()" in r for r in spec_rules)


def resolve_json_path(kind: str, json_path: str) -> dict[str, Any]:
    node = schema(kind)
    for part in re.sub(r"\[\?\(.*?\)\]", "[]", json_path).strip(".").split("."):
        array = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if array:
            node = node["items"]
    return node


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("ApiToken", ["Ready", "Reason", "Workspace", "Secret", "Expires", "Age"]),
        ("TokenWorkspace", ["Ready", "Reason", "Provider", "Workspace", "URL", "Expires", "Age"]),
        (
            "ClusterTokenWorkspace",
            ["Ready", "Reason", "Provider", "Workspace", "URL", "Expires", "Age"],
        ),
    ],
    ids=KINDS,
)
def test_printer_columns_point_at_real_fields(kind: str, columns: list[str]) -> None:
    printed = version(kind)["additionalPrinterColumns"]
    assert [c["name"] for c in printed] == columns
    for column in printed:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        resolve_json_path(kind, column["jsonPath"])  # KeyError if the field does not exist
        assert column.get("description")
        # kubectl renders `date` columns as an age, and a future time as <invalid>.
        if column["name"] == "Expires":
            assert column["type"] == "string"


def aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize(
    ("kind", "part", "model"),
    [
        ("ApiToken", "spec", models.ApiTokenSpec),
        ("ApiToken", "status", models.ApiTokenStatus),
        ("TokenWorkspace", "spec", models.TokenWorkspaceSpec),
        ("TokenWorkspace", "status", models.TokenWorkspaceStatus),
        ("ClusterTokenWorkspace", "spec", models.ClusterTokenWorkspaceSpec),
        ("ClusterTokenWorkspace", "status", models.TokenWorkspaceStatus),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_models_have_exactly_the_crd_fields(kind: str, part: str, model: type[BaseModel]) -> None:
    assert set(schema(kind)["properties"][part]["properties"]) == aliases(model)


@pytest.mark.parametrize(
    ("path", "enum"),
    [
        ("spec.deletionPolicy", models.DeletionPolicy),
        ("spec.workspaceRef.kind", models.WorkspaceKind),
    ],
    ids=["deletionPolicy", "workspaceRef.kind"],
)
def test_api_token_enums_match_the_models(path: str, enum: type[Any]) -> None:
    node = resolve_json_path("ApiToken", path)
    assert node["enum"] == [e.value for e in enum]


def test_workspace_provider_enum_matches_the_model() -> None:
    for kind in ("TokenWorkspace", "ClusterTokenWorkspace"):
        node = resolve_json_path(kind, "spec.provider")
        assert node["enum"] == [p.value for p in models.Provider]


def test_lifetime_days_bounds() -> None:
    node = resolve_json_path("ApiToken", "spec.lifetimeDays")
    assert (node["type"], node["minimum"], node["maximum"]) == ("integer", 1, 365)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("my-token", True),
        ("a.b-c.d", True),
        ("x", True),
        ("My-Token", False),
        ("-a", False),
        ("a-", False),
        ("a_b", False),
        ("a..b", False),
    ],
    ids=lambda v: str(v),
)
def test_secret_name_is_a_dns_1123_subdomain(value: str, valid: bool) -> None:
    node = resolve_json_path("ApiToken", "spec.secretName")
    assert node["maxLength"] == 253
    assert bool(re.fullmatch(node["pattern"], value)) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("720h", True),
        ("36h30m", True),
        ("1.5h", True),
        ("90s", True),
        ("250ms", True),
        ("30", False),
        ("30d", False),
        ("-1h", False),
        ("1h 30m", False),
        ("", False),
    ],
    ids=lambda v: str(v),
)
def test_duration_pattern_agrees_with_the_parser(value: str, valid: bool) -> None:
    node = resolve_json_path("ApiToken", "spec.renewBefore")
    assert bool(re.fullmatch(node["pattern"], value)) is valid
    if valid:
        assert parse_duration(value).total_seconds() > 0
    else:
        with pytest.raises(ValueError):
            parse_duration(value)


def test_cluster_workspace_adds_allowed_namespaces_and_secret_namespace() -> None:
    namespaced = schema("TokenWorkspace")["properties"]["spec"]["properties"]
    cluster = schema("ClusterTokenWorkspace")["properties"]["spec"]["properties"]
    assert set(cluster) - set(namespaced) == {"allowedNamespaces"}
    assert "namespace" not in namespaced["credentialsSecretRef"]["properties"]
    assert "namespace" in cluster["credentialsSecretRef"]["properties"]
    selector = cluster["allowedNamespaces"]["properties"]["selector"]["properties"]
    assert set(selector) == {"matchLabels", "matchExpressions"}
