#!/usr/bin/env bash
# A replicated Kafka cluster on loopback, as production runs it: three KRaft
# nodes (each broker and controller, a controller quorum of three), topics
# replicated three times with min.insync.replicas 2, and beside each
# plaintext listener a SASL_SSL one (SCRAM-SHA-256/512, a CA made here).
# The failure tests run on it; `make run` keeps the single broker.
#
#   stack/cluster.sh up        install what is missing, start the nodes that are not running, wait for all
#   stack/cluster.sh down      stop every node
#   stack/cluster.sh status    say what runs where
#   stack/cluster.sh kill N    kill -9 node N (1-3): a crash, for failure tests
#   stack/cluster.sh stop N    stop node N gracefully
#   stack/cluster.sh clean     stop every node and delete the cluster's data, users and certificates
#
# Idempotent: `up` after `kill` starts only what is missing. State lives in
# $CYCLOPS_STACK_DIR/cluster (default .stack/cluster).
#
# Ports, node N = 1..3 (each overridable): KAFKA_CLUSTER_PORT (19092) + N-1
# plaintext, KAFKA_CLUSTER_SASL_SSL_PORT (19292) + N-1 SASL_SSL,
# KAFKA_CLUSTER_CONTROLLER_PORT (19192) + N-1 the controllers.
# KAFKA_CLUSTER_HEAP (512m) is each node's heap.
#
# The SASL user is KAFKA_CLUSTER_USER (cyclops) with password
# KAFKA_CLUSTER_PASSWORD (cyclops-secret), for SCRAM-SHA-256 and -512; the
# CA clients must trust is $CYCLOPS_STACK_DIR/cluster/tls/ca.pem. Test
# credentials on loopback only: never reuse them.
set -euo pipefail

# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=(1 2 3)
PORT=${KAFKA_CLUSTER_PORT:-19092}
SASL_SSL_PORT=${KAFKA_CLUSTER_SASL_SSL_PORT:-19292}
CONTROLLER_PORT=${KAFKA_CLUSTER_CONTROLLER_PORT:-19192}
HEAP=${KAFKA_CLUSTER_HEAP:-512m}
USER_NAME=${KAFKA_CLUSTER_USER:-cyclops}
USER_PASSWORD=${KAFKA_CLUSTER_PASSWORD:-cyclops-secret}
CLUSTER_DIR=$STACK_DIR/cluster
TLS_DIR=$CLUSTER_DIR/tls
# Only the broker reads it; it guards a keystore of a loopback test CA.
KEYSTORE_PASSWORD=cyclops-keystore

node_dir() { echo "$CLUSTER_DIR/node-$1"; }
node_pid() { echo "$STACK_DIR/run/cluster-node-$1.pid"; }
node_log() { echo "$STACK_DIR/logs/cluster-node-$1.log"; }
plain_port() { echo $((PORT + $1 - 1)); }
sasl_port() { echo $((SASL_SSL_PORT + $1 - 1)); }
controller_port() { echo $((CONTROLLER_PORT + $1 - 1)); }
bootstrap() { echo "127.0.0.1:$(plain_port 1),127.0.0.1:$(plain_port 2),127.0.0.1:$(plain_port 3)"; }

node_alive() { pid_alive "$(node_pid "$1")" kafka.Kafka; }

# A CA and one broker certificate for 127.0.0.1 and localhost (librdkafka
# checks the broker's name), as a PKCS12 keystore for the brokers.
make_certificates() {
  [ -f "$TLS_DIR/broker.p12" ] && return 0
  command -v openssl >/dev/null || die "openssl is missing (apt-get install -y openssl)"
  rm -rf "$TLS_DIR.tmp"
  mkdir -p "$TLS_DIR.tmp"
  (
    cd "$TLS_DIR.tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Cyclops test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout "pass:$KEYSTORE_PASSWORD" -out broker.p12
  ) >"$STACK_DIR/logs/cluster-tls.log" 2>&1 || die "making the cluster's certificates failed" "$STACK_DIR/logs/cluster-tls.log"
  rm -rf "$TLS_DIR"
  mv "$TLS_DIR.tmp" "$TLS_DIR"
}

write_node_config() {
  local n=$1 dir voters=""
  dir=$(node_dir "$n")
  for m in "${NODES[@]}"; do voters+="${voters:+,}$m@127.0.0.1:$(controller_port "$m")"; done
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<EOF
# Written by stack/cluster.sh; rewritten on every start.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(plain_port "$n"),SASL_SSL://127.0.0.1:$(sasl_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(plain_port "$n"),SASL_SSL://127.0.0.1:$(sasl_port "$n")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$KEYSTORE_PASSWORD
ssl.key.password=$KEYSTORE_PASSWORD
log.dirs=$dir/data
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
# A dead node's partitions move within seconds, not the default 18 s.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
EOF
  write_kafka_log4j "$dir/log4j2.properties" "$(node_log "$n")"
}

# Formats every node that has no data yet, with one cluster id and the
# SCRAM user (KRaft keeps SCRAM credentials in its metadata log).
format_nodes() {
  local unformatted=() n cluster_id=""
  for n in "${NODES[@]}"; do [ -f "$(node_dir "$n")/data/meta.properties" ] || unformatted+=("$n"); done
  [ ${#unformatted[@]} -eq 0 ] && return 0
  [ ${#unformatted[@]} -eq ${#NODES[@]} ] ||
    die "cluster nodes ${unformatted[*]} have no data but others do: run stack/cluster.sh clean"
  cluster_id=$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  for n in "${NODES[@]}"; do
    java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$(node_dir "$n")/server.properties" \
      --add-scram "SCRAM-SHA-256=[name=$USER_NAME,password=$USER_PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$USER_NAME,password=$USER_PASSWORD]" \
      >"$STACK_DIR/logs/cluster-format.log" 2>&1 || die "formatting cluster node $n failed" "$STACK_DIR/logs/cluster-format.log"
  done
}

start_node() {
  local n=$1
  for port in "$(plain_port "$n")" "$(sasl_port "$n")" "$(controller_port "$n")"; do
    port_open "$port" && die "port $port (cluster node $n) is taken by another process; stop it or set KAFKA_CLUSTER_*_PORT"
  done
  : >"$(node_log "$n")"
  local jvm_opts
  read -r -a jvm_opts <<<"$KAFKA_JVM_PERFORMANCE_OPTS"
  nohup java -Xms"$HEAP" -Xmx"$HEAP" "${jvm_opts[@]}" -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$(node_dir "$n")/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$(node_dir "$n")/server.properties" \
    >"$STACK_DIR/logs/cluster-node-$n.stdout" 2>&1 </dev/null &
  echo $! >"$(node_pid "$n")"
}

cluster_answers() {
  timeout 30 java -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$(bootstrap)" --list >/dev/null 2>&1
}

up() {
  install_all
  make_certificates
  local n started=() begun=$SECONDS
  for n in "${NODES[@]}"; do node_alive "$n" || write_node_config "$n"; done
  format_nodes
  for n in "${NODES[@]}"; do
    if ! node_alive "$n"; then
      start_node "$n"
      started+=("$n")
    fi
  done
  # Nodes register with the quorum only once a majority runs: start all, then wait for each.
  local deadline=$((SECONDS + 120))
  for n in "${started[@]}"; do
    until grep -q "Kafka Server started" "$(node_log "$n")" 2>/dev/null; do
      node_alive "$n" || { cat "$STACK_DIR/logs/cluster-node-$n.stdout" >>"$(node_log "$n")"; die "cluster node $n exited while starting" "$(node_log "$n")"; }
      [ $SECONDS -lt $deadline ] || die "cluster node $n did not start within 120 s" "$(node_log "$n")"
      sleep 0.3
    done
  done
  cluster_answers || die "the cluster does not answer a metadata request on $(bootstrap)" "$(node_log 1)"
  if [ ${#started[@]} -eq 0 ]; then
    say "cluster   already running  $(bootstrap)"
  else
    say "cluster   started node(s) ${started[*]} in $((SECONDS - begun)) s  plaintext $(bootstrap), SASL_SSL from 127.0.0.1:$SASL_SSL_PORT"
  fi
}

# Stops node $1: SIGTERM (a graceful shutdown moves its leaderships first),
# or with $2 = -9 a crash.
stop_node() {
  local n=$1 signal=${2:--TERM} pid
  node_alive "$n" || { rm -f "$(node_pid "$n")"; return 0; }
  pid=$(cat "$(node_pid "$n")")
  kill "$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
    sleep 0.2
  done
  rm -f "$(node_pid "$n")"
}

node_arg() {
  case "${1:-}" in
    1 | 2 | 3) echo "$1" ;;
    *) echo "usage: $0 kill|stop N (N = 1, 2 or 3)" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up) up ;;
  down)
    # The last two stop together: a lone node waits for a quorum that is gone.
    for n in "${NODES[@]}"; do stop_node "$n" & done
    wait
    say "cluster   stopped"
    ;;
  status)
    rc=0
    for n in "${NODES[@]}"; do
      if node_alive "$n"; then say "cluster   node $n up    127.0.0.1:$(plain_port "$n") (SASL_SSL $(sasl_port "$n"))"; else say "cluster   node $n down"; rc=1; fi
    done
    exit $rc
    ;;
  kill) n=$(node_arg "${2:-}"); stop_node "$n" -9; say "cluster   node $n killed" ;;
  stop) n=$(node_arg "${2:-}"); stop_node "$n"; say "cluster   node $n stopped" ;;
  clean)
    for n in "${NODES[@]}"; do stop_node "$n" & done
    wait
    rm -rf "$CLUSTER_DIR"
    say "cluster's data, users and certificates removed"
    ;;
  *)
    echo "usage: $0 up|down|status|kill N|stop N|clean" >&2
    exit 2
    ;;
esac
