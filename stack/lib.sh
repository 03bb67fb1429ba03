#!/usr/bin/env bash
# What stack/stack.sh and stack/cluster.sh share: where things live, ports,
# small helpers, and installing what is missing. Sourced, never run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${CYCLOPS_STACK_DIR:-$ROOT/.stack}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
PG_DIR=${CYCLOPS_PG_DIR:-/tmp/cyclops-stack/postgres-$PG_PORT}
# The G1 tuning of Kafka's operations guide ("Java Version"). The heap is
# smaller than the guide's 6g, for a laptop, but large enough that a young
# collection (10-25 ms, every broker request waits) comes every 20 s or so
# under the load benchmark, not every 8 s as with 768m.
KAFKA_HEAP=${KAFKA_HEAP:-2g}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:MetaspaceSize=96m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
-XX:InitiatingHeapOccupancyPercent=35 -XX:G1HeapRegionSize=16M -XX:MinMetaspaceFreeRatio=50 \
-XX:MaxMetaspaceFreeRatio=80 -XX:+ExplicitGCInvokesConcurrent}

KAFKA_POM=$ROOT/stack/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_HOME=$STACK_DIR/kafka
KAFKA_LIBS=$KAFKA_HOME/libs-$KAFKA_VERSION
KAFKA_DATA=$KAFKA_HOME/data
KAFKA_LOG=$STACK_DIR/logs/kafka.log
KAFKA_PID=$STACK_DIR/run/kafka.pid
REDIS_LOG=$STACK_DIR/logs/redis.log
REDIS_PID=$STACK_DIR/run/redis.pid
PG_LOG=$PG_DIR/postgres.log

say() { printf '[stack] %s\n' "$*"; }
die() {
  printf '[stack] ERROR: %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    printf '[stack] last lines of %s:\n' "$2" >&2
    tail -n 25 "$2" | sed 's/^/    /' >&2
  fi
  exit 1
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the pid file $1 names a live process whose command line contains
# $2: a pid file left over from before a reboot may name an unrelated process.
pid_alive() {
  [ -f "$1" ] || return 1
  local pid
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "installing Debian packages needs root (or sudo): $*"
  fi
}

# --- installation ------------------------------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

install_debian_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  { [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ]; } || missing+=(postgresql)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v curl >/dev/null || missing+=(curl)
  # rdkafka builds librdkafka from source (a C compiler and make); the SDK
  # tests run Python's sentry-sdk in virtualenvs (stack/sdks.sh).
  { command -v cc >/dev/null && command -v make >/dev/null; } || missing+=(build-essential)
  # librdkafka's TLS and SASL SCRAM link the system OpenSSL (rdkafka's "ssl").
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  # The cluster's certificates (cluster-up).
  command -v openssl >/dev/null || missing+=(openssl)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing from Debian: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$STACK_DIR/logs/apt.log" 2>&1 ||
    die "apt-get update failed" "$STACK_DIR/logs/apt.log"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$STACK_DIR/logs/apt.log" 2>&1 ||
    die "apt-get install ${missing[*]} failed" "$STACK_DIR/logs/apt.log"
  # On a host run by systemd the packages start system-wide servers on the
  # ports this stack uses; the stack runs its own, so stop those.
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now redis-server postgresql >/dev/null 2>&1 || true
  fi
}

need_java() {
  command -v java >/dev/null || die "Java is missing: Kafka needs Java 17 or newer (apt-get install -y default-jre-headless)"
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
  [ -n "$major" ] && [ "$major" -ge 17 ] || die "Kafka $KAFKA_VERSION needs Java 17 or newer; found: $(java -version 2>&1 | head -n 1)"
}

fetch_kafka() {
  need_java
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven is missing: it fetches Kafka from Maven Central (apt-get install -y maven)"
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central (once)"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIBS.tmp" >"$STACK_DIR/logs/kafka-fetch.log" 2>&1 ||
    die "downloading Kafka $KAFKA_VERSION with Maven failed" "$STACK_DIR/logs/kafka-fetch.log"
  [ -f "$KAFKA_LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar" ] ||
    die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not in $KAFKA_LIBS.tmp" "$STACK_DIR/logs/kafka-fetch.log"
  touch "$KAFKA_LIBS.tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

install_all() {
  mkdir -p "$STACK_DIR/logs" "$STACK_DIR/run"
  install_debian_packages
  fetch_kafka
}

# A broker's log4j2 configuration at $1: INFO to the file $2, state changes
# only from WARN (they are most of a busy broker's log).
write_kafka_log4j() {
  cat >"$1" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $2
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = warn
EOF
}
