#!/bin/sh
# `redis-server --flag ...` without a config file: add --protected-mode no, as the official
# image does; anything else runs as given.
set -e
if [ "$1" = "redis-server" ] && [ "${2#--}" != "${2:-x}" -o $# -eq 1 ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
