#!/usr/bin/env bash
# Installs PostgreSQL's server binaries from Debian when they are missing. Tests never use a
# system-wide server: they run initdb and postgres on loopback in a temporary folder of their own
# (see the service test fixtures), so nothing here is started or configured.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
echo "[install-postgres] installing PostgreSQL from Debian's packages" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || {
  echo "[install-postgres] initdb still missing after install" >&2
  exit 1
}
