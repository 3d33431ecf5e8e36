#!/bin/sh
# Build the layerbus CPU image on a machine without Docker Hub, handing this machine's
# pip settings (local wheel folder, local indexes, extra CA certificates) to the build.
# usage: deploy/scripts/build-image.sh [IMAGE]   (run from the repository root)
# Public machines need none of this: docker build -f deploy/Dockerfile -t layerbus:cpu .
set -eu
IMAGE=${1:-layerbus:cpu}
BASE=${LAYERBUS_BASE_IMAGE:-layerbus-base:bookworm}
PORT=${LAYERBUS_PIP_PORT:-8765}
deploy/scripts/base-image.sh "$BASE"

# pip's local folders (pip config list: find-links, extra-index-url) over HTTP on
# loopback; the build runs with --network host so it reaches them.
links=$(pip config get global.find-links 2>/dev/null || true)
extra=$(pip config get global.extra-index-url 2>/dev/null || true)
# Only those folders are served: symlinks in a fresh directory.
ROOT=$(mktemp -d /tmp/layerbus-pip.XXXXXX)
python3 -m http.server --bind 127.0.0.1 "$PORT" --directory "$ROOT" >/dev/null 2>&1 &
server=$!
sleep 1
kill -0 "$server" 2>/dev/null || { echo "port $PORT is taken: set LAYERBUS_PIP_PORT" >&2; exit 1; }
to_http() {  # to_http NAME PATH...: serve each PATH as /NAME-k/BASENAME/
    k=0
    name=$1
    shift
    for u in "$@"; do
        k=$((k + 1))
        dir=${u#file://}
        dir=${dir%/}
        # The parent is linked: local indexes point at ../../files/.
        ln -s "$(dirname "$dir")" "$ROOT/$name-$k"
        printf 'http://127.0.0.1:%s/%s-%s/%s/ ' "$PORT" "$name" "$k" "$(basename "$dir")"
    done
}
# shellcheck disable=SC2086
FIND_LINKS=$(to_http links $links)
# shellcheck disable=SC2086
EXTRA_INDEX=$(to_http index $extra)
# Set only now: dash runs an EXIT trap in each $(...) subshell too.
trap 'kill $server 2>/dev/null; rm -rf "$ROOT"' EXIT
CA_PEM=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
DOCKER_BUILDKIT=0 docker build --network host -f deploy/Dockerfile -t "$IMAGE" \
    --build-arg BASE_IMAGE="$BASE" \
    --build-arg PIP_FIND_LINKS="$FIND_LINKS" \
    --build-arg PIP_EXTRA_INDEX_URL="$EXTRA_INDEX" \
    --build-arg PIP_TRUSTED_HOST=127.0.0.1 \
    --build-arg EXTRA_CA_PEM="$CA_PEM" \
    .
