#!/usr/bin/env bash
# loadtools.sh — the standard Kafka load tools against kafka-sidecar (issue 23).
#
# Starts one real Apache Kafka broker (scripts/kafka-cluster.sh, KRaft, plaintext; every topic created beforehand
# with 3 partitions) and the release kafka-sidecar in front of it, then runs, directly against the broker and
# through the proxy, alternating which goes first each round:
#   - Apache Kafka's ProducerPerformance (kafka-producer-perf-test): N records of 1 KiB, acks=all, idempotent,
#     unthrottled; throughput and its send-to-ack latency percentiles
#   - Apache Kafka's ConsumerPerformance (kafka-consumer-perf-test): reads those N records back
#   - a Gatling simulation (benches/gatling, Java DSL): a fixed rate of 1 KiB records, open model, one
#     virtual user per record; latency percentiles in microseconds, plus Gatling's HTML report
# and prints the median of each figure per mode and the ratio proxied / direct. Everything is stopped on
# exit (trap). Not run by CI (scripts/test.sh): a measurement, not a test.
#
#   scripts/loadtools.sh [--quick] [--rounds N] [--records N] [--rate R] [--seconds S] [--no-gatling]
#
#   --quick        1 round, 50,000 records, Gatling 500/s for 10 s (+3 s warm-up): ~2 minutes
#   default        3 rounds, 200,000 records, Gatling 1,000/s for 30 s (+5 s warm-up): ~9 minutes
#   --no-gatling   skip the Gatling runs (no Maven needed)
#
# Output: target/loadtools/<UTC time>/ (summary.txt, every tool's log, the Gatling reports under gatling/).
# Environment: LOADTOOLS_PORT_BASE (default 29192: broker 29192/29202/29212, proxy 29292 and 29300 + node id),
# LOADTOOLS_SIDECAR (a kafka-sidecar binary to use instead of building target/release/kafka-sidecar),
# KAFKA_KIT_* as scripts/kafka-cluster.sh reads them. Every run is bounded in records and in seconds (timeout).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
say() { echo "[loadtools] $*" >&2; }
die() { echo "[loadtools] ERROR: $*" >&2; exit 1; }

quick=0 rounds="" records="" rate="" seconds="" gatling=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --records) records=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --no-gatling) gatling=0; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (--help)" ;;
  esac
done
if [ $quick = 1 ]; then
  rounds=${rounds:-1} records=${records:-50000} rate=${rate:-500} seconds=${seconds:-10} warmup=3
else
  rounds=${rounds:-3} records=${records:-200000} rate=${rate:-1000} seconds=${seconds:-30} warmup=5
fi
size=1024
# caps per run (seconds): a run that hangs is killed and reported, the script goes on
produce_cap=$((30 + records / 1000)) consume_cap=$((30 + records / 2000)) gatling_cap=$((warmup + seconds + 90))

pbase=${LOADTOOLS_PORT_BASE:-29192}
broker=127.0.0.1:$pbase
proxy_port=$((pbase + 100)) proxy_broker_base=$((pbase + 108))
proxied=127.0.0.1:$proxy_port
out=$repo/target/loadtools/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
summary=$out/summary.txt
t_start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $pbase $((pbase + 10)) $((pbase + 20)) $proxy_port $((proxy_broker_base + 1)); do
  port_free "$p" || die "port $p is in use (another run?); set LOADTOOLS_PORT_BASE"
done

# ------------------------------------------------------------------------------------------- cleanup
kit_dir=$out/kafka
proxy_pid=""
cleanup() {
  local rc=$?
  if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
  fi
  if [ -d "$kit_dir" ]; then
    bash "$here/kafka-cluster.sh" stop --dir "$kit_dir" --now >/dev/null 2>&1 || true
    rm -rf "$kit_dir"/data-*   # up to a few GB of perf-test records
  fi
  [ $rc = 0 ] || say "failed (exit $rc); logs in $out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------- build
sidecar=${LOADTOOLS_SIDECAR:-}
if [ -z "$sidecar" ]; then
  say "cargo build --release (the proxy under test)"
  (cd "$repo" && nice -n 10 cargo build --release --locked --bin kafka-sidecar) >"$out/cargo-build.log" 2>&1 \
    || { tail -30 "$out/cargo-build.log" >&2; die "cargo build --release failed"; }
  sidecar=$repo/target/release/kafka-sidecar
fi
[ -x "$sidecar" ] || die "no kafka-sidecar binary at $sidecar"

kafka_lib=$(bash "$here/kafka-cluster.sh" install | sed -n 's/^KAFKA_LIB=//p')
[ -d "$kafka_lib" ] || die "no Kafka jars (scripts/kafka-cluster.sh install)"
kafka_version=$(unzip -p "$kafka_lib"/kafka-clients-*.jar kafka/kafka-version.properties 2>/dev/null | sed -n 's/^version=//p')
java=${KAFKA_KIT_JAVA:-java}
tool_log4j=$out/tools-log4j2.properties
printf 'status = error\nappender.out.type = Console\nappender.out.name = out\nappender.out.target = SYSTEM_ERR\nappender.out.layout.type = PatternLayout\nappender.out.layout.pattern = %%p %%m (%%c)%%n\nrootLogger.level = WARN\nrootLogger.appenderRef.out.ref = out\n' >"$tool_log4j"

gatling_dir=$repo/benches/gatling
gatling_cp=""
if [ $gatling = 1 ]; then
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven), or use --no-gatling"
  say "mvn test-compile benches/gatling (Gatling $(sed -n 's:.*<gatling.version>\(.*\)</gatling.version>.*:\1:p' "$gatling_dir/pom.xml") from Maven Central)"
  (cd "$gatling_dir" && nice -n 10 mvn -B -q test-compile dependency:build-classpath \
    -Dmdep.outputFile=target/classpath.txt -Dmdep.includeScope=test) >"$out/mvn.log" 2>&1 \
    || { tail -30 "$out/mvn.log" >&2; die "mvn test-compile of benches/gatling failed"; }
  gatling_cp=$gatling_dir/target/test-classes:$(cat "$gatling_dir/target/classpath.txt")
fi

# ------------------------------------------------------------------------------------------- broker + proxy
say "starting one Apache Kafka broker on $broker"
# the kit's brokers run C1 only (fast start for tests); a throughput run wants the full JIT and more heap
KAFKA_KIT_HEAP=${KAFKA_KIT_HEAP:-1g} KAFKA_KIT_BROKER_JVM_OPTS=${KAFKA_KIT_BROKER_JVM_OPTS:--XX:TieredStopAtLevel=4} \
  bash "$here/kafka-cluster.sh" start --name loadtools --dir "$kit_dir" --port-base "$pbase" --auto-create false \
  >"$out/kafka-start.log" 2>&1 || { tail -30 "$out/kafka-start.log" >&2; die "broker did not start"; }

# Every topic exists, with its leader, before the first record: a producer that races an auto-created topic's
# leader election can loop on OUT_OF_ORDER_SEQUENCE_NUMBER (seen once here, direct, with kafka-clients 4.4:
# its first batch to partition 0 answered NOT_LEADER_OR_FOLLOWER, later ones written, the retried one never).
topics=()
for ((r = 1; r <= rounds; r++)); do
  for mode in direct proxied; do
    topics+=("perf-$mode-$r")
    [ $gatling = 1 ] && topics+=("gatling-$mode-$r")
  done
done
say "creating ${#topics[@]} topics (3 partitions each)"
for t in "${topics[@]}"; do
  bash "$here/kafka-cluster.sh" tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$broker" --create \
    --topic "$t" --partitions 3 --replication-factor 1 >>"$out/topics.log" 2>&1 \
    || { tail -20 "$out/topics.log" >&2; die "could not create topic $t"; }
done

cat >"$out/proxy.yaml" <<EOF
# loadtools.sh: kafka-sidecar in front of the one broker (node id 1 -> port $((proxy_broker_base + 1)))
listen: {address: 127.0.0.1, bootstrap_port: $proxy_port, broker_port_base: $proxy_broker_base, max_node_id: 20}
active_cluster: kit
clusters:
  kit: {bootstrap_servers: ["$broker"]}
EOF
say "starting kafka-sidecar on $proxied"
RUST_LOG=warn "$sidecar" run --config "$out/proxy.yaml" >"$out/proxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 100); do
  port_free "$proxy_port" || break
  kill -0 "$proxy_pid" 2>/dev/null || { cat "$out/proxy.log" >&2; die "kafka-sidecar exited"; }
  sleep 0.1
done
port_free "$proxy_port" && die "kafka-sidecar did not listen on $proxied within 10 s"

clk_tck=$(getconf CLK_TCK)
proxy_cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy_pid/stat"; }
cpu_since() { awk -v a="$1" -v b="$(proxy_cpu_ticks)" -v t="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / t }'; }
jvm=(-Xms256m -Xmx768m -Dlog4j2.configurationFile="$tool_log4j")

# ------------------------------------------------------------------------------------------- one run of each tool
# results.tsv: round mode tool metric value
results=$out/results.tsv
: >"$results"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$results"; }

bootstrap_of() { if [ "$1" = direct ]; then echo "$broker"; else echo "$proxied"; fi; }

run_producer() { # round mode
  local r=$1 mode=$2 bs topic log c0 line
  bs=$(bootstrap_of "$mode")
  topic=perf-$mode-$r
  log=$out/producer-$mode-$r.log
  say "round $r $mode: ProducerPerformance $records x $size B -> $topic"
  c0=$([ "$mode" = proxied ] && proxy_cpu_ticks || echo 0)
  if timeout "$produce_cap" nice -n 5 "$java" "${jvm[@]}" -cp "$kafka_lib/*" org.apache.kafka.tools.ProducerPerformance \
      --bootstrap-server "$bs" --topic "$topic" --num-records "$records" --record-size "$size" --throughput -1 \
      --command-property acks=all enable.idempotence=true client.id="perf-$mode" >"$log" 2>&1; then
    # "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, P ms 50th, ... 99.9th."
    line=$(grep 'records sent' "$log" | tail -1)
    record "$r" "$mode" producer records_per_s "$(sed -n 's/.* sent, \([0-9.]*\) records\/sec.*/\1/p' <<<"$line")"
    record "$r" "$mode" producer MB_per_s "$(sed -n 's/.*(\([0-9.]*\) MB\/sec).*/\1/p' <<<"$line")"
    record "$r" "$mode" producer avg_ms "$(sed -n 's/.*, \([0-9.]*\) ms avg latency.*/\1/p' <<<"$line")"
    record "$r" "$mode" producer p50_ms "$(sed -n 's/.*, \([0-9]*\) ms 50th.*/\1/p' <<<"$line")"
    record "$r" "$mode" producer p99_ms "$(sed -n 's/.*, \([0-9]*\) ms 99th.*/\1/p' <<<"$line")"
    record "$r" "$mode" producer p999_ms "$(sed -n 's/.*, \([0-9]*\) ms 99.9th.*/\1/p' <<<"$line")"
    record "$r" "$mode" producer max_ms "$(sed -n 's/.*, \([0-9.]*\) ms max latency.*/\1/p' <<<"$line")"
  else
    say "ProducerPerformance failed or hit its ${produce_cap}s cap: $log"
  fi
  if [ "$mode" = proxied ]; then record "$r" "$mode" producer proxy_cpu_s "$(cpu_since "$c0")"; fi
}

run_consumer() { # round mode: reads back what run_producer wrote in that round and mode
  local r=$1 mode=$2 bs topic log c0
  bs=$(bootstrap_of "$mode")
  topic=perf-$mode-$r
  log=$out/consumer-$mode-$r.log
  say "round $r $mode: ConsumerPerformance $records <- $topic"
  c0=$([ "$mode" = proxied ] && proxy_cpu_ticks || echo 0)
  if timeout "$consume_cap" nice -n 5 "$java" "${jvm[@]}" -cp "$kafka_lib/*" org.apache.kafka.tools.ConsumerPerformance \
      --bootstrap-server "$bs" --topic "$topic" --num-records "$records" --timeout 10000 --group "cperf-$mode-$r" \
      --command-property client.id="cperf-$mode" >"$log" 2>&1; then
    # header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms,
    #         fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    awk -F', *' -v r="$r" -v m="$mode" '
      /^start.time/ { for (i = 1; i <= NF; i++) col[$i] = i; next }
      col["MB.sec"] && NF >= 10 {
        printf "%s\t%s\tconsumer\tMB_per_s\t%s\n", r, m, $col["MB.sec"]
        printf "%s\t%s\tconsumer\trecords_per_s\t%s\n", r, m, $col["nMsg.sec"]
        printf "%s\t%s\tconsumer\tfetch_MB_per_s\t%s\n", r, m, $col["fetch.MB.sec"]
        printf "%s\t%s\tconsumer\trecords_read\t%s\n", r, m, $col["data.consumed.in.nMsg"]
      }' "$log" >>"$results"
  else
    say "ConsumerPerformance failed or hit its ${consume_cap}s cap: $log"
  fi
  if [ "$mode" = proxied ]; then record "$r" "$mode" consumer proxy_cpu_s "$(cpu_since "$c0")"; fi
}

run_gatling() { # round mode
  local r=$1 mode=$2 bs log line c0 kv report
  bs=$(bootstrap_of "$mode")
  log=$out/gatling-$mode-$r.log
  c0=$([ "$mode" = proxied ] && proxy_cpu_ticks || echo 0)
  say "round $r $mode: Gatling $rate/s x ${seconds}s (+${warmup}s warm-up) of $size B"
  if timeout "$gatling_cap" nice -n 5 "$java" -Xms256m -Xmx1g --add-opens=java.base/java.lang=ALL-UNNAMED -Dbootstrap="$bs" -Dtopic="gatling-$mode-$r" \
      -Dlabel="$mode" -Drate="$rate" -Dseconds="$seconds" -Dwarmup="$warmup" -Dsize="$size" \
      -cp "$gatling_cp" io.gatling.app.Gatling --simulation kafkasidecar.ProduceSimulation \
      --results-folder "$out/gatling" --run-description "$mode round $r" >"$log" 2>&1; then
    line=$(grep '^GATLING_RESULT' "$log" | tail -1)
    for kv in $line; do
      case "$kv" in
        rate=*|ok=*|ko=*|p50_us=*|p99_us=*|p999_us=*|max_us=*) record "$r" "$mode" gatling "${kv%%=*}" "${kv#*=}" ;;
      esac
    done
    report=$(sed -n 's/.*please open the following file: *\(file:\/\/\)\{0,1\}//p' "$log" | tail -1)
    if [ -n "$report" ]; then echo "$mode round $r: $report" >>"$out/gatling-reports.txt"; fi
  else
    say "Gatling failed or hit its ${gatling_cap}s cap: $log"
  fi
  if [ "$mode" = proxied ]; then record "$r" "$mode" gatling proxy_cpu_s "$(cpu_since "$c0")"; fi
}

tools="producer consumer"
[ $gatling = 1 ] && tools="$tools gatling"
for ((r = 1; r <= rounds; r++)); do
  # each tool direct and proxied back to back (the machine's load drifts), the order alternating every round
  if [ $((r % 2)) = 1 ]; then order="direct proxied"; else order="proxied direct"; fi
  for tool in $tools; do
    for mode in $order; do
      kill -0 "$proxy_pid" 2>/dev/null || die "kafka-sidecar exited during the runs: $out/proxy.log"
      record "$r" "$mode" "$tool" load_avg_1m "$(cut -d' ' -f1 /proc/loadavg)"
      "run_$tool" "$r" "$mode"
    done
  done
done

# ------------------------------------------------------------------------------------------- summary
{
  echo "kafka-sidecar with the standard load tools, started $started, commit $(cd "$repo" && git rev-parse --short HEAD)"
  echo "$(nproc) cores (load average at the start: $load_before), Apache Kafka $kafka_version broker (1 node, 3 partitions), $rounds round(s), medians"
  echo "ProducerPerformance/ConsumerPerformance: $records x $size B, acks=all, idempotent; Gatling: $rate/s x ${seconds}s of $size B (after ${warmup}s warm-up)"
  echo
  awk -F'\t' '
    function fmt(x) { return (x == "") ? "-" : (x == int(x)) ? sprintf("%d", x) : sprintf("%.2f", x) }
    function median(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      if (n == 0) return ""
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $5 != "" {
      key = $3 SUBSEP $4; v[key, $2] = v[key, $2] " " $5; at[key, $2, $1] = $5
      if (!(key in seen)) { seen[key] = 1; order[++k] = key }
      if ($1 > rounds) rounds = $1
    }
    END {
      printf "%-10s %-16s %12s %12s %9s   %s\n", "tool", "figure", "direct", "proxied", "ratio", "ratio in each round"
      for (i = 1; i <= k; i++) {
        split(order[i], p, SUBSEP)
        d = median(v[order[i], "direct"]); x = median(v[order[i], "proxied"])
        ratio = (d != "" && x != "" && d + 0 != 0) ? sprintf("%.2f", x / d) : "-"
        each = ""
        for (r = 1; r <= rounds; r++) {
          a = at[order[i], "direct", r]; b = at[order[i], "proxied", r]
          if (a != "" && b != "" && a + 0 != 0) each = each sprintf(" %.2f", b / a)
        }
        printf "%-10s %-16s %12s %12s %9s  %s\n", p[1], p[2], fmt(d), fmt(x), ratio, each
      }
    }' "$results"
  echo
  echo "direct, proxied: medians over the rounds; ratio = proxied / direct of those medians (above 1: more throughput,"
  echo "or more latency, through the proxy); each round ran both modes back to back. load_avg_1m: the machine's load"
  echo "when that run started."
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: figures are noisy)"
  echo "proxy: peak RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/$proxy_pid/status")"
  [ -f "$out/gatling-reports.txt" ] && { echo; echo "Gatling HTML reports:"; cat "$out/gatling-reports.txt"; }
  echo "logs and raw figures (results.tsv): $out"
} | tee "$summary"
say "done in $(($(date +%s) - t_start)) s"
