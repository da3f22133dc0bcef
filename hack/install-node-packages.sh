#!/usr/bin/env bash
# Installs the local node's and the image build's Debian packages when any is missing:
# containerd, runc and the CNI plugins (the node), iptables (the one DNAT to the apiserver),
# dnsmasq-base (the dnsmasq binary only: the `dnsmasq` package would start a system daemon),
# buildah, umoci and debootstrap (images without Docker). Nothing here is started or configured:
# hack/localkube/node.py starts its own containerd and dnsmasq with state under its folder.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables dnsmasq-base buildah umoci debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
echo "[install-node-packages] installing from Debian: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d 101: a package's postinst never starts a system daemon (containerd's unit) here.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  added_policy=1
fi
trap '[ -z "$added_policy" ] || $sudo rm -f "$policy"' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
