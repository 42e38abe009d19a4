#!/bin/bash
# KAFKA_* variables -> server.properties (apache/kafka's rule: `___` -> `-`, `__` -> `_`,
# `_` -> `.`, lower case), format the storage once, run the broker in the foreground.
set -euo pipefail
props=/opt/kafka/config/server.properties
: > "$props"
while IFS= read -r var; do
  case "$var" in KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS) continue ;; esac
  key=${var#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!var}" >> "$props"
done < <(compgen -e | grep '^KAFKA_' || true)
grep -q '^log.dirs=' "$props" || echo "log.dirs=/var/lib/kafka/data" >> "$props"
log_dirs=$(sed -n 's/^log\.dirs=//p' "$props")
classpath='/opt/kafka/libs/*'
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  java -cp "$classpath" kafka.tools.StorageTool format \
    -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$props" --ignore-formatted
fi
# shellcheck disable=SC2086  # word splitting of the option strings is intended
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties ${KAFKA_OPTS:-} \
  -cp "$classpath" kafka.Kafka "$props"
