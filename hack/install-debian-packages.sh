#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing (one apt-get run for
# all of them). Nothing is started or configured: a policy-rc.d that answers 101 keeps every
# package's postinst from starting a system daemon (containerd's, PostgreSQL's); the tests and
# hack/localkube start their own servers with state in folders of their own.
#
# Usage: hack/install-debian-packages.sh PACKAGE...   (the Makefile says why each is needed)
set -euo pipefail

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
echo "[install-debian-packages] installing from Debian: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  added_policy=1
fi
trap '[ -z "$added_policy" ] || $sudo rm -f "$policy"' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
