"""Issue 9 item 11: schemathesis, all checks, against a real `apitoken-service serve`.

Bounded in examples and time (about two minutes on two busy cores); every failure schemathesis
reports (a status the schema does not document, a schema-valid request refused, an Allow header
that lists fewer methods than work, ...) fails the test with schemathesis's own report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.tokenservice import RunningTokenService

pytestmark = pytest.mark.service

SCHEMATHESIS = Path(sys.executable).with_name("st")


def test_schemathesis_all_checks_find_nothing(
    token_service: RunningTokenService, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    # Every operation in the workspace `init` made, as its admin: else all answer 401.
    # A well-formed refresh token that is not current is refused with 400 invalid_grant
    # (RFC 6749 section 5.2): schema-valid, and rightly refused.
    config.write_text(
        f'[parameters]\n"path.workspace" = "{token_service.workspace}"\n\n'
        '[[operations]]\ninclude-path = "/oauth2/token"\n'
        "[operations.checks.positive_data_acceptance]\n"
        'expected-statuses = ["2XX", "400", "401", "429"]\n'
    )
    access = token_service.credential["accessToken"]
    result = subprocess.run(
        [
            str(SCHEMATHESIS), "--config-file", str(config), "run",
            f"{token_service.base_url}/openapi.json",
            "--checks", "all",
            "--header", f"Authorization: Bearer {access}",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "8",
            "--max-time", "60",
            "--generation-deterministic",
            "--workers", "1",
            "--no-color",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    report = result.stdout[-12000:]
    assert result.returncode == 0, report
    assert "No issues found" in report or " passed" in report, report
    assert "unhandled error" not in token_service.log_path.read_text()
