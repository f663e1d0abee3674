#!/usr/bin/env bash
# kafka-cluster.sh — real Apache Kafka (KRaft) clusters and a MirrorMaker 2 DR pair on loopback, for tests,
# benchmarks and demos. No Docker, no tarball: the broker, its tools and MirrorMaker 2 come from Maven
# Central through `mvn dependency:copy-dependencies` on a generated pom, once per machine, into
#   $KAFKA_KIT_CACHE (default ~/.cache/kafka-sidecar-kafka)/<version>/lib      broker + tools
#   $KAFKA_KIT_CACHE/mirror-<version>/lib                                       connect-mirror + connect-runtime
# A second run downloads nothing.
#
#   kafka-cluster.sh install                       resolve the jars (idempotent); prints the lib dirs
#   kafka-cluster.sh start  [options]              one cluster; prints "READY ..." once every broker answers
#   kafka-cluster.sh dr-pair [options]             clusters north + west and MirrorMaker 2 both ways
#   kafka-cluster.sh stop   --dir DIR [--now]      kills exactly what start/dr-pair started there (pid files);
#                                                  --now: SIGKILL at once instead of a graceful shutdown
#   kafka-cluster.sh lease  --dir DIR --pid PID [--grace S] [--dr-pair] OPTIONS...
#                                                  for tests: start unless running, hold while PID lives,
#                                                  stopped by a watchdog S seconds after the last holder exits
#   kafka-cluster.sh reap   --root DIR             stop every leased cluster under DIR now; fail if a JVM is left
#   kafka-cluster.sh tool   CLASS ARGS...          runs a Kafka tool main class (e.g. org.apache.kafka.tools.TopicCommand)
#
# start options:
#   --name NAME           cluster name (default kafka); also the default state dir's name
#   --dir DIR             state dir (default $KAFKA_KIT_HOME/NAME, KAFKA_KIT_HOME default /tmp/kafka-kit)
#   --nodes 1|3           brokers, each in combined broker+controller mode (default 1)
#   --node-id-base N      node ids N..N+nodes-1 (default 1); use e.g. 1001 for a cluster with ids >= 1000
#   --port-base P         node i listens on P+i (client listener), P+10+i (internal PLAINTEXT listener, used
#                         between brokers and by admin tools) and P+20+i (controller). Default 19092.
#   --security plaintext|ssl|sasl_ssl   the client listener's protocol (default plaintext). ssl and sasl_ssl use a
#                         test CA generated into DIR/tls (ca.pem; server cert for 127.0.0.1 and localhost).
#                         sasl_ssl: SCRAM-SHA-512 users admin/admin-secret and app/app-secret, created at format.
#   --acl                 StandardAuthorizer on; super users admin and ANONYMOUS (the internal PLAINTEXT
#                         listener); app gets All on every topic, group, transactional id and the cluster.
#   --reauth-ms MS        connections.max.reauth.ms (KIP-368 re-authentication) on the client listener
#   --auto-create true|false   auto.create.topics.enable (default true)
#   --partitions N        num.partitions for auto-created topics (default 1)
#   --foreground-timeout S   how long to wait for readiness (default 120)
# dr-pair options: --dir DIR (default $KAFKA_KIT_HOME/dr), --port-base P (north P.., west P+100..; default 19092),
#   --north-node-id-base N (default 1), --west-node-id-base N (default 1001), --no-offset-sync, --auto-create,
#   --security/--acl/--reauth-ms apply to both clusters (MirrorMaker 2 uses the internal listeners).
#
# Every start writes DIR/cluster.env (shell-sourceable: BOOTSTRAP, INTERNAL_BOOTSTRAP, NODE_IDS, CA_PEM, users) and
# one pid file per process; dr-pair writes DIR/dr.env. Environment: KAFKA_KIT_JAVA (a java >= 17), KAFKA_VERSION
# (default 4.4.0), KAFKA_MIRROR_VERSION (default 4.3.1: connect-mirror 4.4.0 is not on Maven Central),
# KAFKA_KIT_HEAP (default 384m per broker), KAFKA_KIT_BROKER_JVM_OPTS (appended to the brokers' JVM options, which
# win over the defaults: scripts/loadtools.sh turns the C2 compiler back on with -XX:TieredStopAtLevel=4).
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
KAFKA_MIRROR_VERSION=${KAFKA_MIRROR_VERSION:-4.3.1}
LOG4J_VERSION=2.25.5
cache=${KAFKA_KIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-sidecar-kafka}
home=${KAFKA_KIT_HOME:-/tmp/kafka-kit}
heap=${KAFKA_KIT_HEAP:-384m}

say() { echo "[kafka-cluster] $*" >&2; }
die() { echo "[kafka-cluster] ERROR: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------------------- java
pick_java() {
  local j
  for j in "${KAFKA_KIT_JAVA:-}" "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/temurin-25-jdk-amd64/bin/java; do
    [ -n "$j" ] && [ -x "$j" ] || continue
    local v
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ "${v%%.*}" -ge 17 ] 2>/dev/null; then echo "$j"; return 0; fi
  done
  die "no java >= 17 (Kafka 4 needs it); set KAFKA_KIT_JAVA"
}

# ---------------------------------------------------------------------------------------------------- jars
# resolve DEST artifact... : copies the runtime closure of the given group:artifact:version list into DEST
resolve() {
  local dest=$1; shift
  [ -f "$dest/.complete" ] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  local work deps="" a g n v
  work=$(mktemp -d)
  for a in "$@"; do
    IFS=: read -r g n v <<<"$a"
    deps="$deps<dependency><groupId>$g</groupId><artifactId>$n</artifactId><version>$v</version></dependency>"
  done
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>local.kafka-sidecar</groupId><artifactId>kafka-kit</artifactId><version>1</version><packaging>pom</packaging>
<dependencies>$deps</dependencies></project>
EOF
  say "resolving $* from Maven Central into $dest"
  rm -rf "$dest.tmp"
  if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$dest.tmp" >"$work/mvn.log" 2>&1; then
    cat "$work/mvn.log" >&2
    rm -rf "$work" "$dest.tmp"
    die "mvn could not resolve $*"
  fi
  rm -rf "$work" "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$dest.tmp" "$dest"
  touch "$dest/.complete"
}

broker_lib="$cache/$KAFKA_VERSION/lib"
mirror_lib="$cache/mirror-$KAFKA_MIRROR_VERSION/lib"
# slf4j 1.7 is what Kafka 4 builds against; log4j-slf4j-impl routes it to log4j2 (as Kafka's own distribution does)
install_broker() {
  resolve "$broker_lib" "org.apache.kafka:kafka_2.13:$KAFKA_VERSION" "org.apache.kafka:kafka-tools:$KAFKA_VERSION" \
    "org.apache.logging.log4j:log4j-slf4j-impl:$LOG4J_VERSION"
}
install_mirror() {
  resolve "$mirror_lib" "org.apache.kafka:connect-mirror:$KAFKA_MIRROR_VERSION" \
    "org.apache.kafka:connect-runtime:$KAFKA_MIRROR_VERSION" "org.apache.logging.log4j:log4j-slf4j-impl:$LOG4J_VERSION"
}

# Small, fast-starting JVMs: a test broker needs neither C2 nor a parallel collector.
jvm_opts() { # heap
  echo "-Xms64m -Xmx$1 -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Djava.awt.headless=true -Dfile.encoding=UTF-8"
}

write_log4j() { # file level
  cat >"$1" <<EOF
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $2
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
logger.req.name = kafka.request.logger
logger.req.level = WARN
logger.zk.name = org.apache.kafka.clients
logger.zk.level = WARN
EOF
}

# tool DIR CLASS ARGS...: a Kafka command-line tool on the broker classpath
run_tool() {
  local class=$1; shift
  # shellcheck disable=SC2046
  "$java" $(jvm_opts 256m) -Dlog4j2.configurationFile="$tool_log4j" -cp "$broker_lib/*" "$class" "$@"
}

# ---------------------------------------------------------------------------------------------------- TLS
make_tls() { # dir
  local d=$1/tls
  [ -f "$d/server.p12" ] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kafka-kit test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
  openssl pkcs12 -export -in "$d/server.pem" -inkey "$d/server.key" -certfile "$d/ca.pem" \
    -name broker -passout pass:kit-secret -out "$d/server.p12"
}

# ---------------------------------------------------------------------------------------------------- readiness
# A raw ApiVersions v0 request on a broker's internal listener: ready when it answers with error 0.
api_versions_ok() { # port
  local out
  out=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
    printf '\\x00\\x00\\x00\\x0a\\x00\\x12\\x00\\x00\\x00\\x00\\x00\\x07\\xff\\xff' >&3
    head -c 10 <&3 | od -An -tx1" 2>/dev/null) || return 1
  # size(4) correlation id 7 (4) error_code 0 (2)
  [[ $(echo $out) == *"00 00 00 07 00 00" ]]
}

alive() { # pidfile dir
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  # the pid must still be ours: its command line names the state dir (no pid-reuse accidents)
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-Dkafka.kit.dir=$2 "
}

# Right after `setsid java ... &` the pid is still the forked shell until it execs, and alive() says no: on a
# loaded machine that window was long enough for start to call a starting broker dead (and then kill it).
await_exec() { # pidfile dir
  local pid n=0
  pid=$(cat "$1" 2>/dev/null) || return 0
  while ! alive "$1" "$2" && [ -d "/proc/$pid" ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
}

# ---------------------------------------------------------------------------------------------------- start
start_cluster() {
  local name=kafka dir="" nodes=1 idbase=1 pbase=19092 security=plaintext acl=0 reauth="" autocreate=true
  local partitions=1 ready_timeout=120
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) name=$2; shift 2 ;;
      --dir) dir=$2; shift 2 ;;
      --nodes) nodes=$2; shift 2 ;;
      --node-id-base) idbase=$2; shift 2 ;;
      --port-base) pbase=$2; shift 2 ;;
      --security) security=$2; shift 2 ;;
      --acl) acl=1; shift ;;
      --reauth-ms) reauth=$2; shift 2 ;;
      --auto-create) autocreate=$2; shift 2 ;;
      --partitions) partitions=$2; shift 2 ;;
      --foreground-timeout) ready_timeout=$2; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  case "$security" in plaintext) proto=PLAINTEXT ;; ssl) proto=SSL ;; sasl_ssl) proto=SASL_SSL ;;
    *) die "--security plaintext|ssl|sasl_ssl" ;; esac
  [ "$nodes" -ge 1 ] && [ "$nodes" -le 9 ] || die "--nodes 1..9"
  dir=${dir:-$home/$name}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local p
  for p in "$dir"/*.pid; do
    [ -f "$p" ] && alive "$p" "$dir" && die "$dir already runs $(basename "$p" .pid); stop it first"
  done
  rm -rf "$dir"/data-* "$dir"/*.pid "$dir"/*.log "$dir/cluster.env"
  install_broker
  write_log4j "$dir/log4j2.properties" INFO
  local t0; t0=$(now_ms)

  local voters="" bootstrap="" internal="" ids="" i id
  for ((i = 0; i < nodes; i++)); do
    id=$((idbase + i))
    voters="$voters${voters:+,}$id@127.0.0.1:$((pbase + 20 + i))"
    bootstrap="$bootstrap${bootstrap:+,}127.0.0.1:$((pbase + i))"
    internal="$internal${internal:+,}127.0.0.1:$((pbase + 10 + i))"
    ids="$ids${ids:+ }$id"
  done
  [ "$security" = plaintext ] || make_tls "$dir"
  local rf=1; [ "$nodes" -ge 3 ] && rf=3
  for ((i = 0; i < nodes; i++)); do
    id=$((idbase + i))
    {
      echo "# kafka-cluster.sh: cluster $name node $id"
      echo "process.roles=broker,controller"
      echo "node.id=$id"
      echo "controller.quorum.voters=$voters"
      echo "controller.listener.names=CONTROLLER"
      echo "listeners=CLIENT://127.0.0.1:$((pbase + i)),INTERNAL://127.0.0.1:$((pbase + 10 + i)),CONTROLLER://127.0.0.1:$((pbase + 20 + i))"
      echo "advertised.listeners=CLIENT://127.0.0.1:$((pbase + i)),INTERNAL://127.0.0.1:$((pbase + 10 + i))"
      echo "listener.security.protocol.map=CLIENT:$proto,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "inter.broker.listener.name=INTERNAL"
      echo "log.dirs=$dir/data-$id"
      echo "num.partitions=$partitions"
      echo "auto.create.topics.enable=$autocreate"
      echo "default.replication.factor=1"
      echo "offsets.topic.replication.factor=$rf"
      echo "offsets.topic.num.partitions=4"
      echo "transaction.state.log.replication.factor=$rf"
      echo "transaction.state.log.min.isr=1"
      echo "transaction.state.log.num.partitions=4"
      echo "share.coordinator.state.topic.replication.factor=$rf"
      echo "share.coordinator.state.topic.min.isr=1"
      echo "group.initial.rebalance.delay.ms=0"
      # small and few threads: a test broker on a 2-core machine shared with its clients
      echo "num.network.threads=2"
      echo "num.io.threads=2"
      echo "background.threads=2"
      echo "num.recovery.threads.per.data.dir=1"
      echo "log.cleaner.threads=1"
      echo "log.cleaner.dedupe.buffer.size=2097152"
      echo "group.coordinator.threads=1"
      echo "share.coordinator.threads=1"
      echo "controller.quorum.election.timeout.ms=1000"
      echo "controller.quorum.fetch.timeout.ms=2000"
      echo "broker.heartbeat.interval.ms=500"
      echo "broker.session.timeout.ms=6000"
      echo "leader.imbalance.check.interval.seconds=3600"
      if [ "$security" != plaintext ]; then
        echo "listener.name.client.ssl.keystore.type=PKCS12"
        echo "listener.name.client.ssl.keystore.location=$dir/tls/server.p12"
        echo "listener.name.client.ssl.keystore.password=kit-secret"
        echo "listener.name.client.ssl.key.password=kit-secret"
      fi
      if [ "$security" = sasl_ssl ]; then
        echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
        echo "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512"
        echo "listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
      fi
      [ -n "$reauth" ] && echo "listener.name.client.connections.max.reauth.ms=$reauth" && echo "connections.max.reauth.ms=$reauth"
      if [ $acl = 1 ]; then
        echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        echo "super.users=User:admin;User:ANONYMOUS"
        echo "allow.everyone.if.no.acl.found=false"
      fi
    } >"$dir/server-$id.properties"
  done

  # format every node's log dir (SCRAM users go in with the bootstrap metadata), in parallel
  local cluster_id
  # a Kafka cluster id is 16 random bytes in URL-safe base64; one starting with '-' reads as an option
  cluster_id=-
  while [[ $cluster_id == -* ]]; do cluster_id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); done
  local scram=()
  if [ "$security" = sasl_ssl ]; then
    scram=(--add-scram 'SCRAM-SHA-512=[name=admin,password=admin-secret]'
      --add-scram 'SCRAM-SHA-512=[name=app,password=app-secret]')
  fi
  local pids=()
  for id in $ids; do
    run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server-$id.properties" "${scram[@]}" \
      >"$dir/format-$id.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$dir"/format-*.log >&2; die "kafka-storage format failed"; }; done
  local t_format; t_format=$(now_ms)

  for id in $ids; do
    # shellcheck disable=SC2046,SC2086  # JVM options: split into words on purpose
    setsid "$java" $(jvm_opts "$heap") ${KAFKA_KIT_BROKER_JVM_OPTS:-} -Dkafka.kit.dir="$dir" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      -cp "$broker_lib/*" kafka.Kafka "$dir/server-$id.properties" >"$dir/broker-$id.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/broker-$id.pid"
  done
  for id in $ids; do await_exec "$dir/broker-$id.pid" "$dir"; done

  # ready: every broker answers ApiVersions on its internal listener and has logged that startup finished
  local deadline=$(($(date +%s) + ready_timeout)) pending="$ids"
  while [ -n "$pending" ]; do
    local still=""
    for id in $pending; do
      alive "$dir/broker-$id.pid" "$dir" || { tail -40 "$dir/broker-$id.log" >&2; stop_dir "$dir"; die "broker $id of $name exited"; }
      i=$((id - idbase))
      if grep -q "Kafka Server started" "$dir/broker-$id.log" && api_versions_ok $((pbase + 10 + i)); then :; else still="$still $id"; fi
    done
    pending=${still# }
    [ -z "$pending" ] && break
    if [ "$(date +%s)" -ge $deadline ]; then stop_dir "$dir"; die "brokers $pending of $name not ready after ${ready_timeout}s (logs in $dir)"; fi
    sleep 0.2
  done
  local t_ready; t_ready=$(now_ms)

  if [ $acl = 1 ]; then
    run_tool org.apache.kafka.tools.AclCommand --bootstrap-server "$internal" --add --allow-principal User:app \
      --operation All --topic '*' --group '*' --transactional-id '*' --cluster >"$dir/acl.log" 2>&1 \
      || { cat "$dir/acl.log" >&2; stop_dir "$dir"; die "AclCommand failed"; }
  fi

  {
    echo "# written by scripts/kafka-cluster.sh"
    echo "NAME='$name'"
    echo "DIR='$dir'"
    echo "KAFKA_VERSION='$KAFKA_VERSION'"
    echo "CLUSTER_ID='$cluster_id'"
    echo "BOOTSTRAP='$bootstrap'"
    echo "INTERNAL_BOOTSTRAP='$internal'"
    echo "SECURITY='$security'"
    echo "NODE_IDS='$ids'"
    echo "ACL='$acl'"
    echo "REAUTH_MS='$reauth'"
    echo "CA_PEM='$( [ "$security" = plaintext ] || echo "$dir/tls/ca.pem")'"
    echo "ADMIN_USER='admin'"
    echo "ADMIN_PASSWORD='admin-secret'"
    echo "APP_USER='app'"
    echo "APP_PASSWORD='app-secret'"
    echo "FORMAT_MS='$((t_format - t0))'"
    echo "START_MS='$((t_ready - t_format))'"
  } >"$dir/cluster.env"
  echo "READY name=$name bootstrap=$bootstrap internal=$internal security=$security node_ids=${ids// /,} dir=$dir format_ms=$((t_format - t0)) start_ms=$((t_ready - t_format))"
}

# ---------------------------------------------------------------------------------------------------- MM2
dr_pair() {
  local dir="" pbase=19092 nbase=1 wbase=1001 sync=true common=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      --port-base) pbase=$2; shift 2 ;;
      --north-node-id-base) nbase=$2; shift 2 ;;
      --west-node-id-base) wbase=$2; shift 2 ;;
      --no-offset-sync) sync=false; shift ;;
      --security|--reauth-ms|--auto-create|--partitions|--nodes) common+=("$1" "$2"); shift 2 ;;
      --acl) common+=("$1"); shift ;;
      *) die "unknown option $1" ;;
    esac
  done
  dir=${dir:-$home/dr}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  alive "$dir/mm2.pid" "$dir" && die "$dir already runs MirrorMaker 2; stop it first"
  install_mirror
  start_cluster --name north --dir "$dir/north" --node-id-base "$nbase" --port-base "$pbase" "${common[@]}" >/dev/null
  start_cluster --name west --dir "$dir/west" --node-id-base "$wbase" --port-base $((pbase + 100)) "${common[@]}" >/dev/null
  local north west
  north=$(. "$dir/north/cluster.env"; echo "$INTERNAL_BOOTSTRAP")
  west=$(. "$dir/west/cluster.env"; echo "$INTERNAL_BOOTSTRAP")
  # short intervals so a test sees mirroring, checkpoints and group offset sync within seconds
  cat >"$dir/mm2.properties" <<EOF
# kafka-cluster.sh: MirrorMaker 2, dedicated mode, both ways, DefaultReplicationPolicy (north.orders on west)
clusters = north, west
north.bootstrap.servers = $north
west.bootstrap.servers = $west
north->west.enabled = true
west->north.enabled = true
topics = .*
groups = .*
# groups named nosync-* are never checkpointed nor synced: the DR drill compares them with synced groups
groups.exclude = console-consumer-.*, connect-.*, __.*, nosync-.*
replication.factor = 1
checkpoints.topic.replication.factor = 1
heartbeats.topic.replication.factor = 1
offset-syncs.topic.replication.factor = 1
offset.storage.replication.factor = 1
status.storage.replication.factor = 1
config.storage.replication.factor = 1
tasks.max = 1
refresh.topics.interval.seconds = 1
refresh.groups.interval.seconds = 1
emit.heartbeats.interval.seconds = 1
emit.checkpoints.interval.seconds = 1
sync.group.offsets.enabled = $sync
sync.group.offsets.interval.seconds = 1
offset.flush.interval.ms = 1000
sync.topic.configs.enabled = false
sync.topic.acls.enabled = false
dedicated.mode.enable.internal.rest = false
EOF
  write_log4j "$dir/mm2-log4j2.properties" INFO
  # shellcheck disable=SC2046
  setsid "$java" $(jvm_opts 384m) -Dkafka.kit.dir="$dir" -Dlog4j2.configurationFile="$dir/mm2-log4j2.properties" \
    -cp "$mirror_lib/*" org.apache.kafka.connect.mirror.MirrorMaker "$dir/mm2.properties" \
    >"$dir/mm2.log" 2>&1 </dev/null 9>&- &
  echo $! >"$dir/mm2.pid"
  await_exec "$dir/mm2.pid" "$dir"
  # ready: each direction has created its mirror of the other side's heartbeats topic (data flows both ways)
  local deadline=$(($(date +%s) + 180))
  until ls -d "$dir"/west/data-*/north.heartbeats-0 >/dev/null 2>&1 && ls -d "$dir"/north/data-*/west.heartbeats-0 >/dev/null 2>&1; do
    alive "$dir/mm2.pid" "$dir" || { tail -40 "$dir/mm2.log" >&2; stop_dir "$dir"; die "MirrorMaker 2 exited"; }
    if [ "$(date +%s)" -ge $deadline ]; then stop_dir "$dir"; die "MirrorMaker 2 not replicating after 180s (log: $dir/mm2.log)"; fi
    sleep 0.5
  done
  {
    echo "# written by scripts/kafka-cluster.sh dr-pair"
    echo "DIR='$dir'"
    echo "NORTH_ENV='$dir/north/cluster.env'"
    echo "WEST_ENV='$dir/west/cluster.env'"
    echo "NORTH_BOOTSTRAP='$(. "$dir/north/cluster.env"; echo "$BOOTSTRAP")'"
    echo "WEST_BOOTSTRAP='$(. "$dir/west/cluster.env"; echo "$BOOTSTRAP")'"
    echo "NORTH_INTERNAL='$north'"
    echo "WEST_INTERNAL='$west'"
    echo "OFFSET_SYNC='$sync'"
  } >"$dir/dr.env"
  echo "READY dr-pair north=$(. "$dir/north/cluster.env"; echo "$BOOTSTRAP") west=$(. "$dir/west/cluster.env"; echo "$BOOTSTRAP") offset_sync=$sync dir=$dir"
}

# ---------------------------------------------------------------------------------------------------- stop
# Kills every process a pid file under DIR names (if its command line is still ours): TERM, then KILL after 10 s.
stop_dir() {
  local dir=$1 sig=${2:-TERM} f pid victims=()
  [ -d "$dir" ] || return 0
  while IFS= read -r f; do
    local owner
    owner=$(dirname "$f")
    # MirrorMaker first (its pid file is higher up), so it does not log a storm of errors about vanished brokers
    if alive "$f" "$owner"; then
      pid=$(cat "$f")
      kill -"$sig" "$pid" 2>/dev/null || true
      victims+=("$pid:$f:$owner")
    fi
  done < <(find "$dir" -name '*.pid' | awk '{print length($0) " " $0}' | sort -n | cut -d' ' -f2-)
  local deadline=$(($(date +%s) + 10)) v
  for v in "${victims[@]}"; do
    IFS=: read -r pid f owner <<<"$v"
    while alive "$f" "$owner" && [ "$(date +%s)" -lt $deadline ]; do sleep 0.1; done
    if alive "$f" "$owner"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$f"
  done
  find "$dir" -name '*.pid' -delete 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------------- lease
# Shared clusters for test processes (cargo nextest runs every test in its own process): `lease` starts the
# cluster in DIR unless it already runs, records the caller's pid in DIR/users, and makes sure a watchdog
# runs that stops everything GRACE seconds after the last user process has exited (panicked or killed
# tests included). flock serialises concurrent leases of one DIR.
cluster_running() { # dir
  local f any=0
  [ -f "$1/ready" ] || return 1
  while IFS= read -r f; do
    any=1
    alive "$f" "$(dirname "$f")" || return 1
  done < <(find "$1" -name '*.pid')
  [ $any = 1 ]
}

lease() {
  local dir="" user="" grace=15 mode=start
  local args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      --pid) user=$2; shift 2 ;;
      --grace) grace=$2; shift 2 ;;
      --dr-pair) mode=dr; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [ -n "$dir" ] && [ -n "$user" ] || die "usage: lease --dir DIR --pid PID [--grace S] [--dr-pair] OPTIONS..."
  mkdir -p "$dir/users"
  dir=$(cd "$dir" && pwd)
  exec 9>"$dir/lease.lock"
  flock -w 600 9 || die "could not lock $dir/lease.lock"
  touch "$dir/users/$user"
  if ! cluster_running "$dir"; then
    stop_dir "$dir" KILL
    rm -f "$dir/ready"
    if [ $mode = dr ]; then dr_pair --dir "$dir" "${args[@]}" >"$dir/ready.tmp"
    else start_cluster --dir "$dir" "${args[@]}" >"$dir/ready.tmp"; fi
    mv "$dir/ready.tmp" "$dir/ready"
  fi
  local w
  w=$(cat "$dir/watchdog.pidw" 2>/dev/null || true)
  if ! { [ -n "$w" ] && tr '\0' ' ' 2>/dev/null <"/proc/$w/cmdline" | grep -qF -- "watch --dir $dir "; }; then
    setsid nohup "$0" watch --dir "$dir" --grace "$grace" >>"$dir/watchdog.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/watchdog.pidw"
  fi
  cat "$dir/ready"
}

watch_users() {
  local dir=$2 grace=$4 idle=0 u
  while :; do
    local n=0
    for u in "$dir"/users/*; do
      [ -e "$u" ] || continue
      if [ -d "/proc/$(basename "$u")" ]; then n=$((n + 1)); else rm -f "$u"; fi
    done
    if [ $n = 0 ]; then idle=$((idle + 1)); else idle=0; fi
    if [ $idle -ge "$grace" ]; then
      exec 9>"$dir/lease.lock"
      flock 9
      if [ -z "$(ls -A "$dir/users" 2>/dev/null)" ]; then
        stop_dir "$dir" KILL
        rm -f "$dir/ready" "$dir/watchdog.pidw"
        echo "[$(date -u +%T)] no users for ${grace}s: stopped"
        exit 0
      fi
      flock -u 9
      idle=0
    fi
    cluster_running "$dir" || { echo "[$(date -u +%T)] cluster gone"; rm -f "$dir/watchdog.pidw"; exit 0; }
    sleep 1
  done
}

# Stops every leased cluster under DIR now (end of a test run) and reports leftovers.
reap() {
  local root=$1 d
  [ -d "$root" ] || return 0
  for d in "$root"/*/; do
    [ -f "$d/watchdog.pidw" ] && kill "$(cat "$d/watchdog.pidw")" 2>/dev/null || true
    stop_dir "${d%/}" KILL
    rm -f "$d/ready" "$d/watchdog.pidw"
  done
  if pgrep -f -- "-Dkafka.kit.dir=$root" >/dev/null; then
    die "JVMs still running under $root: $(pgrep -f -- "-Dkafka.kit.dir=$root" | tr '\n' ' ')"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  install)
    java=$(pick_java)
    install_broker
    install_mirror
    echo "KAFKA_LIB=$broker_lib"
    echo "KAFKA_MIRROR_LIB=$mirror_lib"
    echo "KAFKA_KIT_JAVA=$java"
    ;;
  start)
    java=$(pick_java)
    tool_log4j=$(mktemp --suffix=.properties); write_log4j "$tool_log4j" WARN; trap 'rm -f "$tool_log4j"' EXIT
    start_cluster "$@"
    ;;
  dr-pair)
    java=$(pick_java)
    tool_log4j=$(mktemp --suffix=.properties); write_log4j "$tool_log4j" WARN; trap 'rm -f "$tool_log4j"' EXIT
    dr_pair "$@"
    ;;
  tool)
    java=$(pick_java)
    install_broker
    tool_log4j=$(mktemp --suffix=.properties); write_log4j "$tool_log4j" WARN; trap 'rm -f "$tool_log4j"' EXIT
    run_tool "$@"
    ;;
  lease)
    java=$(pick_java)
    tool_log4j=$(mktemp --suffix=.properties); write_log4j "$tool_log4j" WARN; trap 'rm -f "$tool_log4j"' EXIT
    lease "$@"
    ;;
  watch)
    watch_users "$@"
    ;;
  reap)
    [ "${1:-}" = --root ] && [ -n "${2:-}" ] || die "usage: reap --root DIR"
    reap "$(cd "$2" 2>/dev/null && pwd || echo "$2")"
    ;;
  stop)
    [ "${1:-}" = --dir ] && [ -n "${2:-}" ] || die "usage: stop --dir DIR [--now]"
    sig=TERM; [ "${3:-}" = --now ] && sig=KILL   # --now: no graceful shutdown (tests throw the data away)
    stop_dir "$(cd "$2" 2>/dev/null && pwd || echo "$2")" $sig
    echo "STOPPED $2"
    ;;
  *)
    sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || exit 2
    ;;
esac
