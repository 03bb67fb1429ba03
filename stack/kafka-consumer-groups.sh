#!/usr/bin/env bash
# Kafka's own kafka-consumer-groups tool, run from the jars `make stack-up`
# fetched (no Kafka distribution needed). Arguments pass through; the
# bootstrap server defaults to the stack's broker.
#
#   bash stack/kafka-consumer-groups.sh --describe --group cyclops-forwarder
#   bash stack/kafka-consumer-groups.sh --list
#   bash stack/kafka-consumer-groups.sh --bootstrap-server kafka-1:9092 --describe --all-groups
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${CYCLOPS_STACK_DIR:-$ROOT/.stack}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/stack/kafka/pom.xml")
LIBS=$STACK_DIR/kafka/libs-$KAFKA_VERSION
[ -f "$LIBS/.complete" ] || { echo "kafka-consumer-groups: no Kafka jars in $LIBS: run \`make stack-up\` first" >&2; exit 1; }
args=("$@")
case " $* " in
  *" --bootstrap-server "*) ;;
  *) args=(--bootstrap-server "127.0.0.1:${KAFKA_PORT:-9092}" "${args[@]}") ;;
esac
exec java -Xmx256m -cp "$LIBS/*" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "${args[@]}"
