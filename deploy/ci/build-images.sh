#!/usr/bin/env bash
# Build every image the compose smoke test runs, offline: a Debian base made with debootstrap
# (kept between runs on the same engine), then on it
#   visrec:0.1.0                deploy/Dockerfile, with the encoder exported here (deploy/model)
#   apache/kafka:4.1.1          deploy/ci/kafka, from the Maven jars `visrec services` resolves
#   redis:7                     deploy/ci/redis, Debian's redis-server
#   visrec-ci/prometheus:2.42   deploy/ci/prometheus, Debian's prometheus
# tagged as deploy/compose.yaml expects, so that the compose file runs unchanged.
# Needs: a running Docker engine (deploy/ci/dockerd.sh), debootstrap, .venv (make install).
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=local/debian:bookworm
# Debian's client has BuildKit built in; a newer client without the buildx plugin has not.
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
export DOCKER_BUILDKIT=1
start=$(date +%s)
say() { echo "-- $* ($(( $(date +%s) - start ))s)"; }

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  root=$(mktemp -d)
  say "debootstrap bookworm from ${mirror:-http://deb.debian.org/debian}"
  debootstrap --variant=minbase bookworm "$root/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$root/log" 2>&1 \
    || { tail -20 "$root/log"; exit 1; }
  tar -C "$root/rootfs" -c . | "$DOCKER" import - "$BASE" >/dev/null
  rm -rf "$root"
fi

if [ ! -f deploy/model/model_card.json ]; then
  say "export the encoder to deploy/model"
  .venv/bin/visrec model export --out deploy/model >/dev/null
fi
# pip inside the build trusts what this machine trusts (a TLS-inspecting proxy's CA).
find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} deploy/ca-certificates/ \;

build() { # TAG CONTEXT [docker build options...]
  local tag=$1 context=$2
  shift 2
  say "build $tag"
  "$DOCKER" build -q --network host --build-arg "BASE_IMAGE=$BASE" -t "$tag" "$@" "$context" >/dev/null
}
build visrec:0.1.0 . -f deploy/Dockerfile --build-arg MODEL_SOURCE=context

kafka_ctx=$(mktemp -d)
trap 'rm -rf "$kafka_ctx"' EXIT
cp -r deploy/ci/kafka/. "$kafka_ctx/"
mkdir "$kafka_ctx/libs"
jars=$(.venv/bin/python -c 'from streams.tools.services.kafka import resolve_jars; print(resolve_jars())')
cp "$jars"/*.jar "$kafka_ctx/libs/"
build apache/kafka:4.1.1 "$kafka_ctx"
build redis:7 deploy/ci/redis
build visrec-ci/prometheus:2.42 deploy/ci/prometheus
say "images built"
