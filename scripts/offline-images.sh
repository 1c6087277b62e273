#!/usr/bin/env bash
# Builds local stand-ins for the official base images, for machines that cannot reach a
# container registry. Everything comes from Debian packages (debootstrap + docker import),
# plus this machine's own Rust toolchain for the builder.
#
#   sudo scripts/offline-images.sh            # build the ones that are missing
#   sudo scripts/offline-images.sh --force    # rebuild them all
#
# Then point the Dockerfile and compose files at them (see README, "Offline / air gap"):
#   BUILDER_IMAGE=counter-offline/rust:bookworm  REDIS_IMAGE=counter-offline/redis:bookworm
# The runtime stage is `scratch`, which needs no image at all.
set -euo pipefail

SUITE=bookworm
BASE_IMAGE=counter-offline/debian:$SUITE
BUILDER_IMAGE=counter-offline/rust:$SUITE
REDIS_IMAGE=counter-offline/redis:$SUITE
# For the many-machines lab (lab/swarm): Docker nodes and the registry they pull from.
NODE_IMAGE=counter-offline/dind:$SUITE
REGISTRY_IMAGE=counter-offline/registry:$SUITE
# The lab's page: the balancer in front of the replicas.
PAGE_IMAGE=counter-offline/haproxy:$SUITE
ALL_IMAGES=("$BASE_IMAGE" "$BUILDER_IMAGE" "$REDIS_IMAGE" "$NODE_IMAGE" "$REGISTRY_IMAGE" "$PAGE_IMAGE")
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

die() { echo "offline-images: $*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

force=false
[ "${1:-}" = "--force" ] && force=true
# A Redis stand-in built before the stack had Sentinels lacks redis-sentinel: build it again.
if have_image "$REDIS_IMAGE" \
  && ! docker run --rm "$REDIS_IMAGE" sh -c 'command -v redis-sentinel' >/dev/null 2>&1; then
  docker image rm "$REDIS_IMAGE" >/dev/null
fi
missing=false
for image in "${ALL_IMAGES[@]}"; do have_image "$image" || missing=true; done
if ! $force && ! $missing; then
  echo "offline-images: ${ALL_IMAGES[*]} exist (use --force to rebuild)"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers: start dockerd first"
sysroot=$(rustc --print sysroot 2>/dev/null) || die "no Rust toolchain on this machine (rustc)"
[ -r "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE: apt-get install ca-certificates"

work=$(mktemp -d "${TMPDIR:-/tmp}/counter-offline.XXXXXX")
cleanup() {
  for fs in proc dev/pts; do
    for root in "$work"/*/; do umount "$root$fs" 2>/dev/null || true; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Runs apt-get inside a rootfs; the host CA bundle lets apt and cargo reach HTTPS mirrors.
chroot_install() {
  local root=$1; shift
  mount -t proc proc "$root/proc"
  # No service may start inside the chroot (docker.io's would try).
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends "$@" \
    >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get install $* failed"; }
  chroot "$root" apt-get clean
  rm -f "$root/usr/sbin/policy-rc.d"
  umount "$root/proc"
}

import() {
  local root=$1 name=$2; shift 2
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/*
  tar -C "$root" -c . | docker import "$@" - "$name" >/dev/null
  echo "offline-images: built $name ($(docker image inspect -f '{{.Size}}' "$name" | numfmt --to=iec))"
}

echo "offline-images: debootstrap $SUITE (about 30 s)"
base=$work/base
# The host's own Debian mirror, which is reachable from here.
mirror=$(awk '$1 == "URIs:" { print $2; exit } $1 == "deb" { print $2; exit }' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
debootstrap --variant=minbase "$SUITE" "$base" "${mirror:-http://deb.debian.org/debian}" >/dev/null
mkdir -p "$base/etc/ssl/certs"
cp "$CA_BUNDLE" "$base/etc/ssl/certs/ca-certificates.crt"
chroot "$base" apt-get update -qq >/dev/null

# debian:bookworm-slim stand-in, with curl for the test clients.
if $force || ! have_image "$BASE_IMAGE"; then
  cp -a "$base" "$work/debian"
  chroot_install "$work/debian" curl ca-certificates
  cp "$CA_BUNDLE" "$work/debian/etc/ssl/certs/ca-certificates.crt"
  import "$work/debian" "$BASE_IMAGE" --change 'CMD ["bash"]'
fi

# redis stand-in: Debian's redis-server and redis-sentinel, laid out like the official image
# (/data, port 6379).
if $force || ! have_image "$REDIS_IMAGE"; then
  cp -a "$base" "$work/redis"
  chroot_install "$work/redis" redis-server redis-sentinel
  mkdir -p "$work/redis/data"
  chroot "$work/redis" chown redis:redis /data
  import "$work/redis" "$REDIS_IMAGE" \
    --change 'WORKDIR /data' --change 'EXPOSE 6379' --change 'CMD ["redis-server"]'
fi

# rust stand-in: gcc and libc for linking (static glibc included), this machine's toolchain.
if $force || ! have_image "$BUILDER_IMAGE"; then
  cp -a "$base" "$work/rust"
  chroot_install "$work/rust" gcc libc6-dev ca-certificates
  cp "$CA_BUNDLE" "$work/rust/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$work/rust/usr/local/rust" "$work/rust/usr/local/cargo"
  # Docs and sources are not needed to build; lib/rustlib/*/bin (rust-lld) is.
  tar -C "$sysroot" --exclude=./share/doc --exclude=./lib/rustlib/src -c . \
    | tar -C "$work/rust/usr/local/rust" -x
  import "$work/rust" "$BUILDER_IMAGE" \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
fi

# docker:dind stand-in: Debian's Docker engine, for the nodes of the many-machines lab.
if $force || ! have_image "$NODE_IMAGE"; then
  cp -a "$base" "$work/dind"
  chroot_install "$work/dind" docker.io iptables ca-certificates procps
  import "$work/dind" "$NODE_IMAGE" --change 'VOLUME /var/lib/docker' --change 'CMD ["dockerd"]'
fi

# registry:2 stand-in: Debian's docker-registry, configured like the official image
# (port 5000, storage in /var/lib/registry, no authentication).
if $force || ! have_image "$REGISTRY_IMAGE"; then
  cp -a "$base" "$work/registry"
  chroot_install "$work/registry" docker-registry
  mkdir -p "$work/registry/var/lib/registry"
  cat >"$work/registry/etc/docker/registry/config.yml" <<'YAML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YAML
  import "$work/registry" "$REGISTRY_IMAGE" --change 'EXPOSE 5000' \
    --change 'VOLUME /var/lib/registry' \
    --change 'CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]'
fi

# haproxy stand-in: Debian's HAProxy, on PATH like the official image's.
if $force || ! have_image "$PAGE_IMAGE"; then
  cp -a "$base" "$work/haproxy"
  chroot_install "$work/haproxy" haproxy
  import "$work/haproxy" "$PAGE_IMAGE" --change 'CMD ["haproxy", "-f", "/etc/haproxy/haproxy.cfg"]'
fi
