#!/bin/sh
# Make a Debian bookworm base image without Docker Hub: debootstrap + docker import.
# usage: deploy/scripts/base-image.sh [IMAGE] [MIRROR]
# MIRROR defaults to the first Debian mirror in this machine's apt sources.
set -eu
IMAGE=${1:-layerbus-base:bookworm}
MIRROR=${2:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | sed -nE 's,^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^ ]+/debian)/?([[:space:]].*)?$,\3,p' \
    | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE already exists"
    exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
ROOTFS=$(mktemp -d /tmp/layerbus-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR into $ROOTFS"
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import - "$IMAGE"
echo "base image $IMAGE ready"
