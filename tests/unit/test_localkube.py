"""Pure parts of the local control-plane harness."""

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from localkube import pki
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
