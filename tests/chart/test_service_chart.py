"""The token service's chart (charts/apitoken-service): linted, rendered and validated by its
schema with the real helm binary. tests/node/test_service_pod.py runs it on the local node."""

from __future__ import annotations

import json
import re

import pytest

from apitoken_service.settings import Settings
from support.helm import SERVICE_CHART, Helm, Manifest

pytestmark = pytest.mark.chart

KEK = ("--set", "keyEncryptionKey.existingSecret=svc-kek")
POSTGRES = (
    *KEK,
    "--set",
    "database.type=postgresql",
    "--set",
    "database.postgresql.urlSecret.name=svc-db",
    "--set",
    "replicas=2",
)
# Settings the chart sets itself (from other values) or that are not for users to set.
CHART_OWNED = {
    "database_url",
    "issuer",
    "address_issuer",
    "key_encryption_key_file",
    "key_encryption_key",
}


def render(helm: Helm, *args: str) -> list[Manifest]:
    return helm.template(*args, chart=SERVICE_CHART)


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def pod_spec(manifests: list[Manifest]) -> Manifest:
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def env(container: Manifest) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_lint_strict(helm: Helm) -> None:
    for args in (KEK, POSTGRES):
        out = helm.run("lint", "--strict", str(SERVICE_CHART), *args).stdout
        assert "0 chart(s) failed" in out


def test_sqlite_on_a_claim_by_default(helm: Helm) -> None:
    manifests = render(helm, *KEK)
    assert kinds(manifests) == ["Deployment", "PersistentVolumeClaim", "Service"]
    (claim,) = [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "rel-apitoken-service-data"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = pod_spec(manifests)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "rel-apitoken-service-data"}
    assert volumes["kek"]["secret"]["secretName"] == "svc-kek"
    (server,) = pod["containers"]
    assert server["image"] == "localhost/apitoken-service:0.1.0"
    assert server["args"] == ["serve", "--host=0.0.0.0", "--port=8080", "--workers=1"]
    assert env(server) == {
        "APITOKEN_SERVICE_ISSUER": "http://rel-apitoken-service.ops.svc.cluster.local:8080",
        "APITOKEN_SERVICE_DATABASE_URL": "sqlite:////data/apitoken-service.db",
        "APITOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE": "/etc/apitoken-service/kek/kek",
    }
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert mounts == {"kek": "/etc/apitoken-service/kek", "tmp": "/tmp", "data": "/data"}


def test_migrate_init_container_shares_the_servers_environment(helm: Helm) -> None:
    for args in (KEK, POSTGRES):
        pod = pod_spec(render(helm, *args, "--set", "settings.accessTokenTtlSeconds=8"))
        (migrate,) = pod["initContainers"]
        (server,) = pod["containers"]
        assert migrate["args"] == ["migrate"]
        assert migrate["image"] == server["image"]
        assert migrate["env"] == server["env"]
        assert migrate["volumeMounts"] == server["volumeMounts"]
        assert env(server)["APITOKEN_SERVICE_ACCESS_TOKEN_TTL_SECONDS"] == "8"


def test_probes_and_hardening(helm: Helm) -> None:
    manifests = render(helm, *KEK)
    pod = pod_spec(manifests)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["fsGroup"] == 65532
    (server,) = pod["containers"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for container in (server, *pod["initContainers"]):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    (service,) = [m for m in manifests if m["kind"] == "Service"]
    # Port and target port are the same number: clusters without kube-proxy reach it too.
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_postgresql_url_from_a_secret(helm: Helm) -> None:
    manifests = render(helm, *POSTGRES)
    assert kinds(manifests) == ["Deployment", "Service"]  # no claim
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    (server,) = pod_spec(manifests)["containers"]
    assert env(server)["APITOKEN_SERVICE_DATABASE_URL"] == {
        "secretKeyRef": {"name": "svc-db", "key": "url"}
    }
    assert "data" not in {m["name"] for m in server["volumeMounts"]}


def test_existing_claim_and_static_volumes(helm: Helm) -> None:
    manifests = render(helm, *KEK, "--set", "database.sqlite.persistence.existingClaim=mine")
    assert "PersistentVolumeClaim" not in kinds(manifests)
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "mine"}
    static = render(helm, *KEK, "--set-string", "database.sqlite.persistence.storageClassName=")
    (claim,) = [m for m in static if m["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["storageClassName"] == ""


def test_issuer_override(helm: Helm) -> None:
    pod = pod_spec(render(helm, *KEK, "--set", "issuer=https://tokens.example.com"))
    assert env(pod["containers"][0])["APITOKEN_SERVICE_ISSUER"] == "https://tokens.example.com"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "keyEncryptionKey.existingSecret is required"),
        ((*KEK, "--set", "replicas=2"), "replicas > 1 needs database.type=postgresql"),
        (
            (*KEK, "--set", "database.type=postgresql"),
            "database.postgresql.urlSecret.name is required",
        ),
    ],
    ids=["no-kek", "sqlite-replicas", "postgres-no-secret"],
)
def test_refuses_unsafe_values(helm: Helm, args: tuple[str, ...], message: str) -> None:
    done = helm.run("template", "rel", str(SERVICE_CHART), *args, check=False)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("databse.type=sqlite", "additional properties 'databse' not allowed"),
        ("database.type=mysql", "/database/type"),
        ("settings.accessTokenTtl=8", "additional properties 'accessTokenTtl' not allowed"),
        ("settings.accessTokenTtlSeconds=0", "/settings/accessTokenTtlSeconds"),
        ("issuer=tokens.example.com", "/issuer"),
        ("port=0", "/port"),
    ],
    ids=["typo-top", "database-type", "typo-setting", "ttl", "issuer", "port"],
)
def test_schema_rejects(helm: Helm, setting: str, message: str) -> None:
    done = helm.run("template", "rel", str(SERVICE_CHART), *KEK, "--set", setting, check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr


def test_schema_settings_are_the_service_settings() -> None:
    """Every APITOKEN_SERVICE_* setting a user may choose can be set through values, and
    nothing else can; each is documented in values.yaml."""
    schema = json.loads((SERVICE_CHART / "values.schema.json").read_text())
    keys = set(schema["properties"]["settings"]["properties"])
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower() for key in keys}
    assert snake == set(Settings.model_fields) - CHART_OWNED
    documented = (SERVICE_CHART / "values.yaml").read_text()
    assert all(f"# {key}:" in documented for key in keys)
