#!/usr/bin/env bash
# The local stack Cyclops runs and is tested against: real Apache Kafka
# (single-node KRaft, fetched from Maven Central), Redis and PostgreSQL (from
# Debian's packages), all on loopback.
#
#   stack/stack.sh up       install what is missing, start what is stopped, wait until each answers
#   stack/stack.sh down     stop everything this script started
#   stack/stack.sh status   say what runs where
#   stack/stack.sh install  only install/fetch (no start)
#   stack/stack.sh delete-topics REGEX   delete the matching topics (the benchmarks' cleanup)
#   stack/stack.sh clean    stop everything and delete Kafka's data (the next `up` starts empty)
#   stack/stack.sh cluster-up|cluster-down|cluster-status|cluster-kill N|cluster-stop N|cluster-clean
#                           the replicated 3-node cluster with SASL_SSL: see stack/cluster.sh
#
# Every command is idempotent. State lives in $CYCLOPS_STACK_DIR (default
# .stack/ in the repository, ignored by git); PostgreSQL's data directory lives
# in $CYCLOPS_PG_DIR (default /tmp/cyclops-stack/postgres-$PG_PORT) because the
# postgres user must be able to reach it, which a private clone directory does
# not allow.
#
# Ports: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), REDIS_PORT (6379),
# PG_PORT (5432). KAFKA_HEAP (default 2g) sets the broker's heap, and
# KAFKA_JVM_PERFORMANCE_OPTS (named as in Kafka's own scripts) its GC flags.
set -euo pipefail

# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- Kafka -------------------------------------------------------------------

kafka_java() { java -cp "$KAFKA_LIBS/*" "$@"; }

# One real metadata request: lists the broker's topics.
kafka_answers() {
  timeout 20 java -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list >/dev/null 2>&1
}

kafka_write_config() {
  mkdir -p "$KAFKA_HOME"
  cat >"$KAFKA_HOME/server.properties" <<EOF
# Written by stack/stack.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
# Topics are created by Cyclops through the admin API, never implicitly.
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  write_kafka_log4j "$KAFKA_HOME/log4j2.properties" "$KAFKA_LOG"
}

kafka_up() {
  if pid_alive "$KAFKA_PID" kafka.Kafka; then
    kafka_answers || die "Kafka (pid $(cat "$KAFKA_PID")) runs but does not answer on 127.0.0.1:$KAFKA_PORT" "$KAFKA_LOG"
    say "kafka     already running  127.0.0.1:$KAFKA_PORT (Kafka $KAFKA_VERSION)"
    return 0
  fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; stop it or set KAFKA_PORT"
  port_open "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is taken by another process; stop it or set KAFKA_CONTROLLER_PORT"
  kafka_write_config
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_HOME/server.properties" \
      >"$STACK_DIR/logs/kafka-format.log" 2>&1 || die "formatting Kafka's KRaft storage failed" "$STACK_DIR/logs/kafka-format.log"
  fi
  local started=$SECONDS
  : >"$KAFKA_LOG"
  # A fixed heap; GC pauses logged, as Kafka's own start script does, since
  # they are what ingest's latency tail is made of on a small machine.
  local jvm_opts
  read -r -a jvm_opts <<<"$KAFKA_JVM_PERFORMANCE_OPTS"
  # The file name in quotes the JVM sees: -Xlog splits on ':' otherwise.
  nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" "${jvm_opts[@]}" -Djava.awt.headless=true \
    "-Xlog:gc:file=\"$STACK_DIR/logs/kafka-gc.log\":time,uptime:filecount=5,filesize=20M" \
    -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/server.properties" \
    >"$STACK_DIR/logs/kafka.stdout" 2>&1 </dev/null &
  echo $! >"$KAFKA_PID"
  local deadline=$((SECONDS + 90))
  until grep -q "Kafka Server started" "$KAFKA_LOG" 2>/dev/null; do
    pid_alive "$KAFKA_PID" kafka.Kafka || { cat "$STACK_DIR/logs/kafka.stdout" >>"$KAFKA_LOG"; die "Kafka exited while starting" "$KAFKA_LOG"; }
    [ $SECONDS -lt $deadline ] || die "Kafka did not start within 90 s" "$KAFKA_LOG"
    sleep 0.2
  done
  kafka_answers || die "Kafka started but does not answer a metadata request on 127.0.0.1:$KAFKA_PORT" "$KAFKA_LOG"
  say "kafka     started in $((SECONDS - started)) s  127.0.0.1:$KAFKA_PORT (Kafka $KAFKA_VERSION, KRaft)"
}

kafka_down() {
  pid_alive "$KAFKA_PID" kafka.Kafka || { rm -f "$KAFKA_PID"; return 0; }
  local pid
  pid=$(cat "$KAFKA_PID")
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
    sleep 0.2
  done
  rm -f "$KAFKA_PID"
  say "kafka     stopped"
}

# --- Redis -------------------------------------------------------------------

redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

redis_up() {
  if pid_alive "$REDIS_PID" redis-server; then
    redis_answers || die "Redis (pid $(cat "$REDIS_PID")) runs but does not answer PING on 127.0.0.1:$REDIS_PORT" "$REDIS_LOG"
    say "redis     already running  redis://127.0.0.1:$REDIS_PORT"
    return 0
  fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process; stop it or set REDIS_PORT"
  mkdir -p "$STACK_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --pidfile "$REDIS_PID" \
    --logfile "$REDIS_LOG" --dir "$STACK_DIR/redis" --save "" --appendonly no >/dev/null ||
    die "redis-server did not start" "$REDIS_LOG"
  local deadline=$((SECONDS + 20))
  until redis_answers; do
    [ $SECONDS -lt $deadline ] || die "Redis does not answer PING on 127.0.0.1:$REDIS_PORT" "$REDIS_LOG"
    sleep 0.1
  done
  say "redis     started          redis://127.0.0.1:$REDIS_PORT"
}

redis_down() {
  pid_alive "$REDIS_PID" redis-server || { rm -f "$REDIS_PID"; return 0; }
  local pid
  pid=$(cat "$REDIS_PID")
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while pid_alive "$REDIS_PID" redis-server && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  if pid_alive "$REDIS_PID" redis-server; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$REDIS_PID"
  say "redis     stopped"
}

# --- PostgreSQL --------------------------------------------------------------

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_answers() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; }
pg_running() { [ -f "$PG_DIR/data/postmaster.pid" ] && as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

pg_up() {
  if pg_running; then
    pg_answers || die "PostgreSQL runs but does not answer 'select 1' on 127.0.0.1:$PG_PORT" "$PG_LOG"
    say "postgres  already running  postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    return 0
  fi
  port_open "$PG_PORT" && die "port $PG_PORT is taken by another process; stop it or set PG_PORT"
  local bin
  bin=$(pg_bin)
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PG_DIR"; fi
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 ||
      die "initdb failed" "$PG_DIR/initdb.log"
  fi
  as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_LOG" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR" start >/dev/null 2>&1 ||
    die "PostgreSQL did not start" "$PG_LOG"
  pg_answers || die "PostgreSQL started but does not answer 'select 1' on 127.0.0.1:$PG_PORT" "$PG_LOG"
  say "postgres  started          postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

pg_down() {
  pg_running || return 0
  as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  say "postgres  stopped"
}

# --- commands ----------------------------------------------------------------

status() {
  local rc=0
  if pid_alive "$KAFKA_PID" kafka.Kafka && kafka_answers; then say "kafka     up    127.0.0.1:$KAFKA_PORT (Kafka $KAFKA_VERSION)"; else say "kafka     down"; rc=1; fi
  if pid_alive "$REDIS_PID" redis-server && redis_answers; then say "redis     up    redis://127.0.0.1:$REDIS_PORT"; else say "redis     down"; rc=1; fi
  if [ -n "$(pg_bin)" ] && pg_running && pg_answers; then say "postgres  up    postgres://postgres@127.0.0.1:$PG_PORT/postgres"; else say "postgres  down"; rc=1; fi
  say "logs in $STACK_DIR/logs (postgres: $PG_LOG)"
  return $rc
}

case "${1:-}" in
  install) install_all ;;
  up)
    install_all
    kafka_up
    redis_up
    pg_up
    say "logs in $STACK_DIR/logs"
    ;;
  cluster-*) exec bash "$ROOT/stack/cluster.sh" "${1#cluster-}" "${@:2}" ;;
  down)
    bash "$ROOT/stack/cluster.sh" down
    kafka_down
    redis_down
    if [ -n "$(pg_bin)" ]; then pg_down; fi
    ;;
  status) status ;;
  delete-topics)
    # Benchmarks write gigabytes; they drop their topics when done.
    [ -n "${2:-}" ] || { echo "usage: $0 delete-topics REGEX" >&2; exit 2; }
    kafka_answers || die "Kafka does not answer on 127.0.0.1:$KAFKA_PORT" "$STACK_DIR/logs/kafka.log"
    topics=$(timeout 60 java -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list --topic "$2") ||
      die "cannot list the topics matching $2" "$STACK_DIR/logs/kafka.log"
    if [ -n "$topics" ]; then
      timeout 120 java -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --delete --topic "$2" >/dev/null ||
        die "cannot delete the topics matching $2" "$STACK_DIR/logs/kafka.log"
      say "deleted $(printf '%s\n' "$topics" | wc -l) topic(s) matching $2"
    fi
    ;;
  clean)
    # Stops everything, then forgets Kafka's data: the next `up` formats a
    # fresh, empty broker. Packages, the Kafka jars and SDK venvs stay.
    bash "$ROOT/stack/cluster.sh" clean
    kafka_down
    redis_down
    if [ -n "$(pg_bin)" ]; then pg_down; fi
    rm -rf "$KAFKA_DATA"
    say "Kafka's data removed"
    ;;
  *)
    echo "usage: $0 up|down|status|install|delete-topics REGEX|clean|cluster-up|cluster-down|cluster-status|cluster-kill N|cluster-stop N|cluster-clean" >&2
    exit 2
    ;;
esac
