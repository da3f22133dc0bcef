"""The real helm binary (hack/build-binaries.sh builds it once into a version-keyed cache) with
folders of its own, so tests never touch ~/.config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OPERATOR_CHART = REPO / "charts" / "apitoken-operator"
SERVICE_CHART = REPO / "charts" / "apitoken-service"

Manifest = dict[str, Any]


def helm_binary() -> Path:
    done = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh"), "helm"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    folders = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return Path(folders["helm"]) / "helm"


class Helm:
    def __init__(self, binary: Path, home: Path, chart: Path = OPERATOR_CHART) -> None:
        self.binary = binary
        self.chart = chart
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def template(self, *args: str, chart: Path | None = None) -> list[Manifest]:
        out = self.run(
            "template", "rel", str(chart or self.chart), "--namespace", "ops", *args
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]
