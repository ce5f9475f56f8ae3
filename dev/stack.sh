#!/usr/bin/env bash
# The local stack: real Apache Kafka (KRaft), Apache Cassandra 5 (CQL stand-in for ScyllaDB),
# Apicurio Registry (Confluent-compatible API) and an aiosmtpd SMTP server, all fetched from
# Maven Central / PyPI into .cache/, bound to loopback on fixed ports, stopped by pid.
#
#   dev/stack.sh fetch            download what is missing (idempotent)
#   dev/stack.sh up [COMPONENT…]  start (default: all); already running is fine
#   dev/stack.sh down             stop everything this script started
#   dev/stack.sh status           what runs, with pids and ports
#
# Ports can be moved with the environment variables below; the tests read the same ones.
#
# NOTIFY_SECURE=1: a separate stack (.run/secure, ports 29xxx) as a secured platform runs it:
# Kafka with a SASL_SSL listener (SCRAM-SHA-512; a CA and the broker's certificate made on
# the fly with openssl) and the StandardAuthorizer (nothing allowed without an ACL); a SCRAM
# user for every principal of topics/acls.toml, plus `admin` (super user) and `svc-intruder`
# (authenticated, no ACL); each password in $RUN/kafka/users/<name> (mode 600). Cassandra with
# PasswordAuthenticator. The ACLs themselves are written by `notify acls apply`, as on a real
# cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NOTIFY_CACHE_DIR:-$ROOT/.cache}
SECURE=${NOTIFY_SECURE:-0}
if [ "$SECURE" = 1 ]; then
  RUN=${NOTIFY_RUN_DIR:-$ROOT/.run/secure}
  KAFKA_PORT=${NOTIFY_KAFKA_PORT:-29092}
  KAFKA_CONTROLLER_PORT=${NOTIFY_KAFKA_CONTROLLER_PORT:-29093}
  CQL_PORT=${NOTIFY_CQL_PORT:-29042}
  CQL_STORAGE_PORT=${NOTIFY_CQL_STORAGE_PORT:-27000}
  REGISTRY_PORT=${NOTIFY_REGISTRY_PORT:-28081}
  SMTP_PORT=${NOTIFY_SMTP_PORT:-22525}
else
  RUN=${NOTIFY_RUN_DIR:-$ROOT/.run}
  KAFKA_PORT=${NOTIFY_KAFKA_PORT:-19092}
  KAFKA_CONTROLLER_PORT=${NOTIFY_KAFKA_CONTROLLER_PORT:-19093}
  CQL_PORT=${NOTIFY_CQL_PORT:-19042}
  CQL_STORAGE_PORT=${NOTIFY_CQL_STORAGE_PORT:-17000}
  REGISTRY_PORT=${NOTIFY_REGISTRY_PORT:-18081}
  SMTP_PORT=${NOTIFY_SMTP_PORT:-12525}
fi
APICURIO_VERSION=3.0.9
COMPONENTS=(kafka cassandra registry smtp)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

port_of() {
  case $1 in
    kafka) echo "$KAFKA_PORT" ;; cassandra) echo "$CQL_PORT" ;;
    registry) echo "$REGISTRY_PORT" ;; smtp) echo "$SMTP_PORT" ;;
  esac
}

# ---------------------------------------------------------------- fetch
fetch_maven() { # name pom
  local name=$1 pom=$2
  if [ -f "$CACHE/$name/.complete" ] && [ "$CACHE/$name/.complete" -nt "$pom" ]; then return; fi
  log "fetching $name from Maven Central into .cache (once; usually 1-3 min)"
  local t0=$SECONDS
  rm -rf "$CACHE/$name/lib"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$CACHE/$name/lib" \
    || die "maven could not fetch $name (see the output above)"
  touch "$CACHE/$name/.complete"
  log "fetched $name in $((SECONDS - t0))s"
}

fetch_registry() {
  local dir=$CACHE/apicurio
  [ -f "$dir/.complete-$APICURIO_VERSION" ] && return
  log "fetching Apicurio Registry $APICURIO_VERSION from Maven Central (once; usually 1-2 min)"
  mkdir -p "$dir"
  mvn -q -B dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$dir" || die "maven could not fetch apicurio-registry-app"
  rm -rf "$dir/app-dist" && mkdir -p "$dir/app-dist"
  tar xzf "$dir/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$dir/app-dist"
  touch "$dir/.complete-$APICURIO_VERSION"
}

fetch_smtp() {
  [ -x "$CACHE/venv/bin/aiosmtpd" ] && return
  log "installing aiosmtpd from PyPI into .cache/venv (once; usually under a minute)"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install -q aiosmtpd || die "pip could not install aiosmtpd"
}

fetch() {
  command -v java >/dev/null || die "java not found (Kafka, Cassandra and Apicurio need a JDK 17+)"
  command -v mvn >/dev/null || die "mvn not found (needed to fetch the stack from Maven Central)"
  mkdir -p "$CACHE"
  fetch_maven kafka "$ROOT/dev/maven/kafka.xml"
  fetch_maven cassandra "$ROOT/dev/maven/cassandra.xml"
  fetch_registry
  fetch_smtp
}

# ---------------------------------------------------------------- start
# Runs a command in the background with its own process group and records its pid.
launch() { # name command...
  local name=$1; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN/$name.pid"
}

wait_ready() { # name seconds probe...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  until "$@"; do
    pid_alive "$name" || { tail -n 30 "$RUN/$name.log" >&2; die "$name exited during start-up (log: $RUN/$name.log)"; }
    (( SECONDS - start < limit )) || { tail -n 30 "$RUN/$name.log" >&2; die "$name not ready after ${limit}s (log: $RUN/$name.log)"; }
    sleep 0.5
  done
  log "$name ready on 127.0.0.1:$(port_of "$name") after $((SECONDS - start))s"
}

# Kafka users of the secured stack: admin, svc-intruder and every principal of
# topics/acls.toml.
kafka_users() {
  echo admin
  echo svc-intruder
  sed -n 's/^name = "\(.*\)"$/\1/p' "$ROOT/topics/acls.toml"
}

make_tls() { # the secured platform's CA and the servers' key store (made once, in $RUN/kafka/tls)
  local tls=$RUN/kafka/tls
  mkdir -p "$tls"
  chmod 700 "$tls"
  if [ ! -f "$tls/broker.p12" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=notify dev CA" \
      -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tls/san.ext"
    openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
      -days 30 -extfile "$tls/san.ext" -out "$tls/broker.crt" 2>/dev/null
    openssl rand -hex 16 >"$tls/keystore.password"
    openssl pkcs12 -export -in "$tls/broker.crt" -inkey "$tls/broker.key" -certfile "$tls/ca.crt" \
      -name broker -out "$tls/broker.p12" -passout "file:$tls/keystore.password"
  fi
}

make_secrets() { # the CA, the broker's key store, and a password per user (made once)
  local dir=$1
  make_tls
  mkdir -p "$dir/users"
  chmod 700 "$dir/users"
  local u
  for u in $(kafka_users); do
    [ -f "$dir/users/$u" ] || (umask 077; openssl rand -hex 16 >"$dir/users/$u")
  done
}

secure_listeners() { # the security part of server.properties
  local dir=$1 admin
  admin=$(cat "$dir/users/admin")
  cat <<EOF
listeners=BROKER://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=BROKER://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_SSL
inter.broker.listener.name=BROKER
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.broker.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.broker.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=$(cat "$dir/tls/keystore.password")
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
EOF
}

start_kafka() {
  local dir=$RUN/kafka
  mkdir -p "$dir"
  local listeners scram=()
  if [ "$SECURE" = 1 ]; then
    make_secrets "$dir"
    listeners=$(secure_listeners "$dir")
    local u
    for u in $(kafka_users); do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(cat "$dir/users/$u")]")
    done
  else
    listeners="listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
  fi
  (umask 077; cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
$listeners
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
# Sized for the 2-core dev box: the defaults (8 I/O, 3 network threads) hand every request
# between more threads than there are cores (bench/runs/2026-12-04-chain-50k).
num.io.threads=2
num.network.threads=2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
)
  cat >"$dir/log4j2.properties" <<'EOF'
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka.server.KafkaRaftServer
logger.kafka.level=INFO
EOF
  local cp="$CACHE/kafka/lib/*"
  local jvm=(java -Xms256m -Xmx768m -XX:+UseG1GC "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$cp")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$("${jvm[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    "${jvm[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "formatting the Kafka log dir failed"; }
  fi
  launch kafka "${jvm[@]}" kafka.Kafka "$dir/server.properties"
  log "starting kafka (usually 5-15 s)"
  wait_ready kafka 90 port_open "$KAFKA_PORT"
}

start_cassandra() {
  local dir=$RUN/cassandra
  mkdir -p "$dir"
  cat >"$dir/cassandra.yaml" <<EOF
cluster_name: notify-dev
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$CQL_STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $CQL_STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
commitlog_sync: periodic
commitlog_sync_period: 10000ms
data_file_directories: [$dir/data]
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/saved_caches
hints_directory: $dir/hints
cdc_raw_directory: $dir/cdc_raw
paxos_variant: v2
# Sized for the 2-core dev box: with 16 and 128 workers, handing each request between idle
# workers cost the database more CPU than the rows (bench/runs/2026-12-04-chain-50k).
concurrent_reads: 4
concurrent_writes: 4
native_transport_max_threads: 16
concurrent_counter_writes: 4
memtable_heap_space: 128MiB
EOF
  if [ "$SECURE" = 1 ]; then
    # Password authentication; the built-in superuser `cassandra` is what the dev demo signs
    # in as (its password in a file, read through cql.password_file like any secret).
    printf 'authenticator: PasswordAuthenticator\nauthorizer: CassandraAuthorizer\n' >>"$dir/cassandra.yaml"
    (umask 077; echo cassandra >"$dir/password")
    # TLS only (no plaintext session), with the platform's certificate (CA in kafka/tls).
    make_tls
    cat >>"$dir/cassandra.yaml" <<EOF
client_encryption_options:
  enabled: true
  optional: false
  keystore: $RUN/kafka/tls/broker.p12
  keystore_password: $(cat "$RUN/kafka/tls/keystore.password")
  store_type: PKCS12
  require_client_auth: false
EOF
  fi
  cat >"$dir/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%level %date{ISO8601} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDOUT"/></root>
  <logger name="org.apache.cassandra.service.CassandraDaemon" level="INFO"/>
</configuration>
EOF
  # Cassandra on JDK 17 needs access to JDK internals (the same list its jvm17 options file carries).
  local opens=()
  for p in java.base/jdk.internal.misc java.base/jdk.internal.ref java.base/sun.nio.ch \
           java.management.rmi/com.sun.jmx.remote.internal.rmi java.rmi/sun.rmi.registry \
           java.rmi/sun.rmi.server java.sql/java.sql; do
    opens+=(--add-exports "$p=ALL-UNNAMED")
  done
  for p in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
           java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
           java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal \
           java.base/sun.nio.ch java.base/java.io java.base/java.nio java.base/java.util.concurrent \
           java.base/java.util java.base/java.util.concurrent.atomic java.base/java.lang \
           java.base/java.math java.base/java.lang.reflect java.base/java.net; do
    opens+=(--add-opens "$p=ALL-UNNAMED")
  done
  launch cassandra java -Xms512m -Xmx1g -Xss512k -XX:+UseG1GC -Djdk.attach.allowAttachSelf=true \
    "${opens[@]}" \
    -Dcassandra.config="file://$dir/cassandra.yaml" -Dcassandra.storagedir="$dir" \
    -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=0 -Dlogback.configurationFile="$dir/logback.xml" \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -cp "$CACHE/cassandra/lib/*" org.apache.cassandra.service.CassandraDaemon
  log "starting cassandra (usually 30-90 s; the slowest part of a start)"
  wait_ready cassandra 180 port_open "$CQL_PORT"
}

start_registry() {
  local dir=$RUN/registry
  mkdir -p "$dir"
  launch registry java -Xmx384m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dquarkus.log.level=WARN -Dapicurio.rest.deletion.artifact.enabled=true \
    -Dapicurio.rest.deletion.artifact-version.enabled=true \
    -jar "$CACHE/apicurio/app-dist/apicurio-registry-app-$APICURIO_VERSION-runner.jar"
  log "starting the Apicurio registry (usually 10-30 s)"
  wait_ready registry 120 curl -sf -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects"
}

start_smtp() {
  mkdir -p "$RUN/smtp/maildir/"{tmp,new,cur}
  launch smtp "$CACHE/venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" \
    -c aiosmtpd.handlers.Mailbox "$RUN/smtp/maildir"
  wait_ready smtp 30 port_open "$SMTP_PORT"
}

up() {
  local wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${COMPONENTS[@]}")
  fetch
  mkdir -p "$RUN"
  for c in "${wanted[@]}"; do
    if pid_alive "$c"; then log "$c already running (pid $(cat "$RUN/$c.pid"))"; continue; fi
    if port_open "$(port_of "$c")"; then
      die "port $(port_of "$c") for $c is taken by another process; stop it or set NOTIFY_${c^^}_PORT"
    fi
    "start_$c"
  done
}

# ---------------------------------------------------------------- stop
down() {
  local c pid
  for c in smtp registry cassandra kafka; do
    pid_alive "$c" || { rm -f "$RUN/$c.pid"; continue; }
    pid=$(cat "$RUN/$c.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$RUN/$c.pid"
    log "$c stopped"
  done
}

status() {
  local c
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$c"; then echo "$c running pid=$(cat "$RUN/$c.pid") port=$(port_of "$c")"
    else echo "$c stopped"; fi
  done
}

case ${1:-} in
  fetch) fetch ;;
  up) shift; up "$@" ;;
  down) down ;;
  clean) down; rm -rf "$RUN" ;;
  status) status ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
