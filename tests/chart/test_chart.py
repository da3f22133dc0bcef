"""The Helm chart: linted, rendered, validated by its schema, and installed into the real local
control plane with the real helm binary (hack/build-binaries.sh builds it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from apitoken_operator.settings import OperatorSettings
from localkube import Cluster
from support.helm import OPERATOR_CHART, Helm, Manifest

pytestmark = pytest.mark.chart

REPO = Path(__file__).resolve().parents[2]
CHART = OPERATOR_CHART

NAMESPACED_VALUES = """\
watchNamespaces: [billing, payments]
logFormat: plain
settings:
  refreshJitterPercent: 12.5
  refreshMargin: 90s
  credentialLifetimeDays: 30
metrics:
  service:
    enabled: true
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
"""


@pytest.fixture(scope="session")
def namespaced_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "namespaced.yaml"
    path.write_text(NAMESPACED_VALUES)
    return path


def only(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[m['kind'] for m in manifests]}"
    return found[0]


def container(manifests: list[Manifest]) -> Manifest:
    containers: list[Manifest] = only(manifests, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def env_of(manifests: list[Manifest]) -> dict[str, str]:
    """The plain values; POD_ID (Kopf's identity) must come from the Pod's name."""
    env = container(manifests)["env"]
    pod_id = [e for e in env if e["name"] == "POD_ID"]
    assert pod_id == [{"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    return {e["name"]: e["value"] for e in env if e["name"] != "POD_ID"}


def test_lint_strict(helm: Helm, namespaced_values: Path) -> None:
    assert "0 chart(s) failed" in helm.run("lint", "--strict", str(CHART)).stdout
    with_values = helm.run("lint", "--strict", str(CHART), "-f", str(namespaced_values))
    assert "0 chart(s) failed" in with_values.stdout


def test_defaults_serve_all_namespaces(helm: Helm) -> None:
    manifests = helm.template()
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    c = container(manifests)
    assert c["image"] == "localhost/apitoken-operator:0.1.0"
    assert c["command"] == [
        "apitoken-operator",
        "run",
        "--all-namespaces",
        "--liveness-port=8080",
        "--metrics-port=9090",
        "--log-format=json",
    ]
    assert env_of(manifests) == {"APITOKEN_OPERATOR_NAMESPACE": "ops"}
    binding = only(manifests, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == only(manifests, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-apitoken-operator", "namespace": "ops"}
    ]


def test_namespaced_values(helm: Helm, namespaced_values: Path) -> None:
    manifests = helm.template("-f", str(namespaced_values))
    args = container(manifests)["command"]
    assert args[2:4] == ["--namespace=billing", "--namespace=payments"]
    assert "--all-namespaces" not in args
    assert "--log-format=plain" in args
    assert env_of(manifests) == {
        "APITOKEN_OPERATOR_NAMESPACE": "ops",
        "APITOKEN_OPERATOR_REFRESH_JITTER_PERCENT": "12.5",
        "APITOKEN_OPERATOR_REFRESH_MARGIN": "90s",
        "APITOKEN_OPERATOR_CREDENTIAL_LIFETIME_DAYS": "30",
    }
    service = only(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("imagee.tag=1.0", "additional properties 'imagee' not allowed"),
        ("settings.refreshMarginn=2m", "additional properties 'refreshMarginn' not allowed"),
        ("image.pullPolicy=Sometimes", "value must be one of 'Always', 'IfNotPresent', 'Never'"),
        ("settings.refreshMargin=2minutes", "/settings/refreshMargin"),
        ("logFormat=xml", "/logFormat"),
        ("metrics.port=0", "/metrics/port"),
    ],
    ids=["typo-top", "typo-setting", "pull-policy", "duration", "log-format", "port"],
)
def test_schema_rejects(helm: Helm, setting: str, message: str) -> None:
    done = helm.run("template", "rel", str(CHART), "--set", setting, check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr


def test_schema_settings_are_the_operator_settings() -> None:
    """Every APITOKEN_OPERATOR_* setting can be set through values, and nothing else can
    (the namespace is the release's)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = set(schema["properties"]["settings"]["properties"])
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower() for key in keys}
    assert snake == set(OperatorSettings.model_fields) - {"namespace"}
    documented = (CHART / "values.yaml").read_text()
    assert all(f"# {key}:" in documented for key in keys)


def test_service_monitor_needs_service(helm: Helm) -> None:
    done = helm.run(
        "template", "rel", str(CHART), "--set", "metrics.serviceMonitor.enabled=true", check=False
    )
    assert done.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in done.stderr


def test_crd_copy_matches_source() -> None:
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copy = sorted(p.name for p in (CHART / "crds").iterdir())
    assert source, "no CRDs in crds/"
    assert copy == source, "charts/apitoken-operator/crds/ lists other files than crds/"
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"{name} drifted: cp crds/*.yaml charts/apitoken-operator/crds/"
        )


def test_cluster_role_rules_match_deploy_rbac(helm: Helm) -> None:
    source = (REPO / "deploy" / "rbac.yaml").read_text()
    expected = only(list(yaml.safe_load_all(source)), "ClusterRole")["rules"]
    assert only(helm.template(), "ClusterRole")["rules"] == expected
    # The Lease of leader election: a Role in the release namespace, the same rules.
    role = only(list(yaml.safe_load_all(source)), "Role")
    assert only(helm.template(), "Role")["rules"] == role["rules"]
    assert only(helm.template(), "Role")["metadata"]["namespace"] == "ops"
    # Each rule keeps its why-comment: every comment line of deploy/rbac.yaml's rules.
    rules_text = source.split("rules:", 1)[1].split("---", 1)[0]
    why = [line.strip() for line in rules_text.splitlines() if line.strip().startswith("#")]
    template = (CHART / "templates" / "clusterrole.yaml").read_text()
    chart_comments = {line.strip() for line in template.splitlines()}
    assert len(why) > 10
    assert [line for line in why if line not in chart_comments] == []


def test_rollout_restart_rule_only_when_asked(helm: Helm) -> None:
    """rbac.rolloutRestart adds exactly the rule of deploy/rbac-rollout-restart.yaml."""
    source = (REPO / "deploy" / "rbac-rollout-restart.yaml").read_text()
    (extra,) = only(list(yaml.safe_load_all(source)), "ClusterRole")["rules"]
    default = only(helm.template(), "ClusterRole")["rules"]
    assert extra not in default and not [r for r in default if "apps" in r["apiGroups"]]
    asked = only(helm.template("--set", "rbac.rolloutRestart=true"), "ClusterRole")["rules"]
    assert asked == [*default, extra]


def test_deployment_single_writer_and_hardened(helm: Helm) -> None:
    manifests = helm.template()
    spec = only(manifests, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    c = container(manifests)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert c["resources"]["limits"]["memory"]


def _gone(kube: Client, kind: type[ClusterRole] | type[ClusterRoleBinding], name: str) -> bool:
    try:
        kube.get(kind, name)
    except ApiError as e:
        if e.status.code == 404:
            return True
        raise
    return False


@pytest.fixture
def release(namespace: str) -> str:
    # Release-specific names keep the cluster-scoped RBAC of parallel installs apart.
    return f"r{namespace[-6:]}"


def test_install_and_uninstall(
    helm: Helm, cluster: Cluster, kube: Client, namespace: str, release: str
) -> None:
    kubeconfig = ("--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace)
    # The CRDs are already installed in the test cluster; no pods ever run (there are no nodes).
    helm.run("install", release, str(CHART), *kubeconfig, "--skip-crds", "--timeout", "60s")
    name = f"{release}-apitoken-operator"
    try:
        account = kube.get(ServiceAccount, name, namespace=namespace)
        assert account.metadata is not None and account.metadata.name == name
        role = kube.get(ClusterRole, name)
        assert role.rules is not None and len(role.rules) == 7
        binding = kube.get(ClusterRoleBinding, name)
        assert binding.roleRef.name == name
        assert binding.subjects is not None
        assert [(s.name, s.namespace) for s in binding.subjects] == [(name, namespace)]
        deployment = kube.get(Deployment, name, namespace=namespace)
        assert deployment.spec is not None and deployment.spec.strategy is not None
        assert deployment.spec.replicas == 1
        assert deployment.spec.strategy.type == "Recreate"
        listed = helm.run("list", *kubeconfig, "--short").stdout.split()
        assert listed == [release]
    finally:
        helm.run("uninstall", release, *kubeconfig, "--wait", "--timeout", "60s")
    assert _gone(kube, ClusterRole, name)
    assert _gone(kube, ClusterRoleBinding, name)
    for namespaced in (Deployment, ServiceAccount):
        with pytest.raises(ApiError) as missing:
            kube.get(namespaced, name, namespace=namespace)
        assert missing.value.status.code == 404
    assert helm.run("list", *kubeconfig, "--short").stdout.split() == []


def _grants(rules: list[Manifest]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_namespaced_rbac_reaches_only_the_served_namespaces(
    helm: Helm, namespaced_values: Path
) -> None:
    """With watchNamespaces, the ClusterRole is bound per namespace (the served ones and the
    release's), and the cluster-wide binding grants only cluster-scoped needs: no Secrets."""
    manifests = helm.template("-f", str(namespaced_values))
    roles = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ClusterRole"}
    assert set(roles) == {"rel-apitoken-operator", "rel-apitoken-operator-cluster-scope"}
    # (The Lease's RoleBinding, to a Role, is not one of them.)
    bindings = [
        m for m in manifests if m["kind"] == "RoleBinding" and m["roleRef"]["kind"] == "ClusterRole"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["billing", "ops", "payments"]
    subject = [{"kind": "ServiceAccount", "name": "rel-apitoken-operator", "namespace": "ops"}]
    for binding in bindings:
        assert binding["roleRef"]["name"] == "rel-apitoken-operator"
        assert binding["subjects"] == subject
    cluster_binding = only(manifests, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == "rel-apitoken-operator-cluster-scope"
    assert cluster_binding["subjects"] == subject
    scoped = _grants(roles["rel-apitoken-operator-cluster-scope"]["rules"])
    full = _grants(roles["rel-apitoken-operator"]["rules"])
    # Nothing beyond the ClusterRole's rules (Namespaces: get, list, watch in both modes).
    assert scoped <= full
    assert {("", "namespaces", v) for v in ("get", "list", "watch")} <= scoped
    assert not {g for g in scoped if g[1] in ("secrets", "events")}
    assert ("apitoken.dev", "clustertokenworkspaces", "watch") in scoped


def test_release_namespace_listed_once(helm: Helm) -> None:
    manifests = helm.template("--set", "watchNamespaces={ops,billing}")
    bindings = [
        m["metadata"]["namespace"]
        for m in manifests
        if m["kind"] == "RoleBinding" and m["roleRef"]["kind"] == "ClusterRole"
    ]
    assert sorted(bindings) == ["billing", "ops"]
