#!/usr/bin/env bash
# Builds the operator's and the token service's images without Docker: the same Containerfiles
# users build with `docker build`, here with buildah (chroot isolation, storage in our cache) from
# a base made with debootstrap from Debian's packages (Python 3.11, like the default
# python:3.11-slim). Everything slow is cached outside the repository:
#   ${APITOKEN_CACHE_DIR:-~/.cache/apitoken-operator}/images/
#     base-bookworm.tar      the debootstrap root filesystem (about 90 s once)
#     wheels-<hash>/         the locked runtime dependencies as wheels (pip download once)
#     storage/               buildah's layers: a Python change rebuilds only the last layer
#     <name>-<tag>.oci.tar   the built images, imported into the node's containerd
# Prints NAME=OCI-ARCHIVE lines on stdout (progress on stderr).
#
# Usage: hack/build-images.sh [--context]   (--context: only prepare build/image-context)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${APITOKEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/apitoken-operator}/images
context=$repo/build/image-context
suite=bookworm
base_ref=localhost/apitoken-base:$suite
tag=$(awk -F'"' '/^appVersion:/ { print $2 }' "$repo/charts/apitoken-operator/Chart.yaml")
uv=$repo/.tools/bin/uv
pip=$repo/.tools/bin/pip

log() { printf '[build-images] %s\n' "$*" >&2; }

mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8

# -- the build context: the project's wheel, the hashed lock, the wheelhouse ------------------
start=$SECONDS
rm -rf "$context"
mkdir -p "$context/dist" "$context/wheels"
"$uv" export --quiet --frozen --no-dev --no-emit-project --format requirements-txt \
  -o "$context/requirements.txt" --project "$repo"
"$uv" build --quiet --wheel --out-dir "$context/dist" "$repo" 2>/dev/null
if [ "${1:-}" = "--context" ]; then
  # For `docker build`: the wheelhouse stays empty and pip reads the index (hashes checked).
  log "context ready in $context"
  exit 0
fi
wheels=$cache/wheels-$(sha256sum "$context/requirements.txt" | cut -c1-16)
if [ ! -d "$wheels" ]; then
  log "downloading the locked runtime dependencies as wheels"
  "$pip" download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    -r "$context/requirements.txt" -d "$wheels.tmp"
  mv "$wheels.tmp" "$wheels"
fi
cp -l "$wheels"/* "$context/wheels/" 2>/dev/null || cp "$wheels"/* "$context/wheels/"

# -- buildah with its own storage -------------------------------------------------------------
cat >"$cache/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$cache/storage"
runroot = "$cache/run"
CONF
export CONTAINERS_STORAGE_CONF=$cache/storage.conf
bud=(buildah --log-level=error)

# -- the base: Debian with Python 3.11, made by debootstrap ----------------------------------
if ! "${bud[@]}" inspect --type image "$base_ref" >/dev/null 2>&1; then
  if [ ! -f "$cache/base-$suite.tar" ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "making the base with debootstrap from $mirror (about 90 s, once)"
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root" "$mirror" \
      >"$cache/debootstrap.log" 2>&1 || { log "debootstrap failed: $cache/debootstrap.log"; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$cache/base-$suite.tar.tmp" .
    mv "$cache/base-$suite.tar.tmp" "$cache/base-$suite.tar"
    rm -rf "$root"
  fi
  ctr=$("${bud[@]}" from scratch)
  "${bud[@]}" add "$ctr" "$cache/base-$suite.tar" / >/dev/null
  "${bud[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  "${bud[@]}" commit --quiet "$ctr" "$base_ref" >/dev/null
  "${bud[@]}" rm "$ctr" >/dev/null
fi

# -- the pause image (the node's sandbox image): a static Go binary alone -----------------------
pause_ref=localhost/pause:apitoken
if ! "${bud[@]}" inspect --type image "$pause_ref" >/dev/null 2>&1; then
  mkdir -p "$cache/pause"
  (cd "$here/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$cache/pause/pause" .)
  ctr=$("${bud[@]}" from scratch)
  "${bud[@]}" copy "$ctr" "$cache/pause/pause" /pause >/dev/null
  "${bud[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  "${bud[@]}" commit --quiet "$ctr" "$pause_ref" >/dev/null
  "${bud[@]}" rm "$ctr" >/dev/null
fi
if [ ! -f "$cache/pause.oci.tar" ]; then
  "${bud[@]}" push --quiet "$pause_ref" "oci-archive:$cache/pause.oci.tar.tmp:$pause_ref" >/dev/null
  mv "$cache/pause.oci.tar.tmp" "$cache/pause.oci.tar"
fi
echo "pause=$cache/pause.oci.tar"

# -- the two images ---------------------------------------------------------------------------
for name in operator tokenservice; do
  image=apitoken-$name
  [ "$name" = tokenservice ] && image=apitoken-service
  ref=localhost/$image:$tag
  "${bud[@]}" bud --quiet --layers --isolation chroot --pull=never \
    --build-arg BASE="$base_ref" --build-arg PIP_NO_INDEX=1 \
    -f "$repo/images/$name/Containerfile" -t "$ref" "$context" >/dev/null
  archive=$cache/$image-$tag.oci.tar
  rm -f "$archive"
  "${bud[@]}" push --quiet "$ref" "oci-archive:$archive:$ref" >/dev/null
  echo "$image=$archive"
done
log "images built in $((SECONDS - start)) s"
