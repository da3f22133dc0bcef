"""Pure parts of the local control-plane harness."""

import re
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from apitoken_operator.crd.resources import ApiTokenSpec, TokenWorkspaceSpec, WorkspaceKind
from localkube import examples, pki
from localkube.tokenservice import WorkspaceCredential
from support.controlplane import namespace_name

pytestmark = pytest.mark.unit

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "test_name",
    [
        "test_simple",
        "test_param[Case With Spaces-and_UNDERSCORES]",
        "test_" + "x" * 100,
        "test_trailing_dash_at_cut" + "-" * 30,
    ],
    ids=["simple", "parametrized", "long", "dashes"],
)
def test_namespace_names_are_dns_labels_and_unique(test_name: str) -> None:
    a, b = namespace_name(test_name), namespace_name(test_name)
    assert DNS_1123_LABEL.match(a), a
    assert len(a) <= 63
    assert a != b


def test_pki_admin_is_system_masters_and_serving_cert_covers_loopback(tmp_path: Path) -> None:
    made = pki.generate(tmp_path)
    admin = x509.load_pem_x509_certificate(made.admin_cert.read_bytes())
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    serving = x509.load_pem_x509_certificate(made.serving_cert.read_bytes())
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    assert made.admin_key.stat().st_mode & 0o077 == 0


def test_point_at_service_sets_url_and_workspace_on_a_copy() -> None:
    doc: dict[str, Any] = {
        "apiVersion": "apitoken.dev/v1alpha1",
        "kind": "TokenWorkspace",
        "metadata": {"name": "main"},
        "spec": {"url": "http://127.0.0.1:8080", "workspace": "acme"},
    }
    pointed = examples.point_at_service(doc, "http://127.0.0.1:4242", "acme-2")
    assert pointed["spec"] == {"url": "http://127.0.0.1:4242", "workspace": "acme-2"}
    assert doc["spec"]["url"] == "http://127.0.0.1:8080"  # the loaded manifest is untouched


def test_workspaces_are_applied_first_and_the_rest_as_written() -> None:
    def doc(kind: str, name: str) -> dict[str, Any]:
        return {"apiVersion": "apitoken.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}

    docs = [doc("ApiToken", "a"), doc("TokenWorkspace", "w"), doc("ApiToken", "b")]
    ordered = examples.in_apply_order(docs)
    assert [d["metadata"]["name"] for d in ordered] == ["w", "a", "b"]


def test_credential_repr_hides_the_refresh_token() -> None:
    credential = WorkspaceCredential(workspace="acme", refresh_token="rt_secret-value")
    assert "rt_secret-value" not in repr(credential)


def test_there_is_a_first_example() -> None:
    assert [p.name for p in examples.example_folders()][:1] == ["01-basic"]


@pytest.mark.parametrize("folder", examples.example_folders(), ids=lambda p: p.name)
def test_examples_are_documented_valid_and_namespace_free(folder: Path) -> None:
    assert (folder / "README.md").read_text().strip()
    docs = examples.load_manifests(folder)
    workspaces = {d["metadata"]["name"] for d in docs if examples.is_token_workspace(d)}
    api_tokens = [d for d in docs if d["kind"] == "ApiToken"]
    assert api_tokens, "an example shows at least one ApiToken"
    for doc in docs:
        # Tests apply each example into a fresh namespace.
        assert "namespace" not in doc["metadata"], doc["metadata"]
    for doc in docs:
        if examples.is_token_workspace(doc):
            workspace = TokenWorkspaceSpec.model_validate(doc["spec"])
            if examples.is_refresh_only(folder):
                assert workspace.oauth2 is not None  # validated with its client settings
            else:
                assert workspace.url and workspace.workspace and workspace.credentials_secret_ref
    for doc in api_tokens:
        ref = ApiTokenSpec.model_validate(doc["spec"]).workspace_ref
        if ref.resolved_kind == WorkspaceKind.TOKEN_WORKSPACE:
            assert ref.name in workspaces


def test_reap_stale_kills_recorded_processes_and_removes_the_state(tmp_path: Path) -> None:
    """`make dev` after an unclean stop: the orphan recorded in pids.json is killed and the
    folder (with its logs/) removed, so the next start does not fail on FileExistsError."""
    import json
    import subprocess

    from localkube.controlplane import PIDS_FILE, reap_stale

    state = tmp_path / "controlplane"
    (state / "logs").mkdir(parents=True)
    orphan = subprocess.Popen(["/bin/sleep", "300"])
    # Popen may return before the child's exec shows in /proc (cmdline is empty meanwhile); an
    # orphan of a real run has long been running its binary.
    cmdline = Path(f"/proc/{orphan.pid}/cmdline")
    for _ in range(500):
        if cmdline.read_bytes().startswith(b"/bin/sleep"):
            break
        time.sleep(0.01)
    (state / PIDS_FILE).write_text(json.dumps([["kube-apiserver", orphan.pid, "/bin/sleep"]]))
    said: list[str] = []
    reap_stale(state, said.append)
    assert orphan.wait(timeout=5) == -9
    assert not state.exists()
    assert said and "kube-apiserver" in said[0]
