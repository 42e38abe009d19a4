#!/usr/bin/env bash
# Start a Docker engine where none answers (a machine without systemd): no bridge network and
# no iptables, so containers use the host's network (deploy/ci/compose.ci.yaml). Logs to
# .state/dockerd.log. Does nothing when an engine already answers.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER=$(command -v /usr/bin/docker || command -v docker)
if "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi
mkdir -p .state
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO sh -c 'nohup dockerd --iptables=false --ip-forward=false --bridge=none >"$0" 2>&1 &' .state/dockerd.log
for _ in $(seq 1 60); do
  "$DOCKER" info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd did not answer within 30 s; .state/dockerd.log:" >&2
tail -20 .state/dockerd.log >&2
exit 1
