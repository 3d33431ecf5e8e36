#!/bin/sh
# Make this machine a Docker host for `make test-deploy`: Debian's docker.io and
# docker-compose (v1), debootstrap for the base image, and a running dockerd.
# Prints why not and exits 0 when it cannot (the deploy tests then skip with that reason).
set -u
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "docker-host: no running Docker engine, and not root with apt-get to install one"
    exit 0
fi
need=""
command -v dockerd >/dev/null || need="$need docker.io"
command -v docker-compose >/dev/null || need="$need docker-compose"
command -v debootstrap >/dev/null || need="$need debootstrap"
if [ -n "$need" ]; then
    echo "docker-host: apt-get install$need"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null \
        || { echo "docker-host: apt-get install$need failed"; exit 0; }
fi
if ! docker info >/dev/null 2>&1; then
    echo "docker-host: starting dockerd (log: /var/log/layerbus-dockerd.log)"
    nohup dockerd >/var/log/layerbus-dockerd.log 2>&1 &
    i=0
    while ! docker info >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 60 ] && { echo "docker-host: dockerd did not start"; exit 0; }
        sleep 1
    done
fi
echo "docker-host: $(docker version --format 'engine {{.Server.Version}}'), $(docker-compose version --short 2>/dev/null)"
