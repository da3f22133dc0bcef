#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy, pinned by the modules in
# hack/kube, hack/etcd and hack/helm, into a cache outside the repository keyed by version:
#   ${APITOKEN_CACHE_DIR:-~/.cache/apitoken-operator}/<name>-<version>/bin
# Each set is rebuilt only when a binary is missing. When KUBEBUILDER_ASSETS points at a folder
# that already holds kube-apiserver and etcd (envtest's convention), those are used instead.
# Prints the bin folder of each set as NAME=PATH lines on stdout (progress goes to stderr).
#
# Usage: hack/build-binaries.sh [kube|etcd|helm ...]   (default: all three)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${APITOKEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/apitoken-operator}

log() { printf '[build-binaries] %s\n' "$*" >&2; }

# The version a module pins, read from its go.mod so there is one source of truth.
pinned() { # module-dir module-path
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' \
    "$here/$1/go.mod"
}

# Static, stripped, reproducible builds; -v lists packages as they compile, shown as a counter.
gobuild() { # module-dir out-dir ldflags packages...
  local dir=$1 out=$2 ldflags=$3
  shift 3
  mkdir -p "$out.tmp"
  local start=$SECONDS
  (
    cd "$here/$dir"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -tags selinux,notest \
      -ldflags "-s -w $ldflags" -o "$out.tmp/" "$@" 2>&1
  ) | awk -v name="$dir" '
      /^(go: |#|.*\.go:[0-9]+)/ { print > "/dev/stderr"; next }
      { n++; if (n % 100 == 0) printf "[build-binaries] %s: %d packages compiled\n", name, n > "/dev/stderr" }
      END { printf "[build-binaries] %s: %d packages compiled\n", name, n > "/dev/stderr" }'
  [ "${PIPESTATUS[0]}" -eq 0 ] || { log "$dir: go build failed"; rm -rf "$out.tmp"; exit 1; }
  mkdir -p "$out"
  mv "$out.tmp"/* "$out/"
  rmdir "$out.tmp"
  log "$dir: built in $((SECONDS - start)) s into $out"
}

have_all() { # dir names...
  local dir=$1
  shift
  for n in "$@"; do [ -x "$dir/$n" ] || return 1; done
}

build_kube() {
  local v
  v=$(pinned kube k8s.io/kubernetes)
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have_all "$KUBEBUILDER_ASSETS" kube-apiserver; then
    echo "kube=$KUBEBUILDER_ASSETS"
    return
  fi
  local out="$cache/kubernetes-$v/bin"
  if ! have_all "$out" kube-apiserver kube-controller-manager kube-scheduler kubelet; then
    log "building kube-apiserver, kube-controller-manager, kube-scheduler and kubelet $v (cold: about 20-30 min on 2 cores)"
    local major minor flags="" p
    major=${v#v}; major=${major%%.*}
    minor=${v#v*.}; minor=${minor%%.*}
    # Without these the server reports v0.0.0-master, which breaks Helm's kubeVersion checks.
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
      flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    gobuild kube "$out" "$flags" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet
  fi
  echo "kube=$out"
}

build_etcd() {
  local v
  v=$(pinned etcd go.etcd.io/etcd/server/v3)
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have_all "$KUBEBUILDER_ASSETS" etcd; then
    echo "etcd=$KUBEBUILDER_ASSETS"
    return
  fi
  local out="$cache/etcd-$v/bin"
  if ! have_all "$out" etcd; then
    log "building etcd $v"
    gobuild etcd "$out" "-X go.etcd.io/etcd/api/v3/version.GitSHA=$v" go.etcd.io/etcd/server/v3
    # The server module's main package is named after its folder; give it etcd's usual name.
    mv "$out/server" "$out/etcd"
  fi
  echo "etcd=$out"
}

build_helm() {
  local v
  v=$(pinned helm helm.sh/helm/v4)
  local out="$cache/helm-$v/bin"
  if ! have_all "$out" helm; then
    log "building helm $v"
    gobuild helm "$out" "-X helm.sh/helm/v4/internal/version.version=$v" helm.sh/helm/v4/cmd/helm
  fi
  echo "helm=$out"
}

# One build per cache at a time: a second caller (make dev while make test builds) waits for
# the first and then finds the binaries in place.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(etcd helm kube)
command -v go >/dev/null || { log "Go is required (go 1.26+): install it from your distribution"; exit 1; }
for t in "${targets[@]}"; do
  case $t in
    kube) build_kube ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    *) log "unknown target: $t"; exit 2 ;;
  esac
done
