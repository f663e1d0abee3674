#!/usr/bin/env bash
# validate-monitoring.sh — checks the monitoring files against the metrics the code emits.
#
#   1. k8s/monitoring/grafana-dashboard.json parses, is structurally sound, references
#      only metrics declared in src/admin.rs (admin::names), and every declared metric;
#      k8s/monitoring/prometheus-rules.yaml likewise references only declared metrics;
#      docs/metrics.md documents exactly the declared metrics.
#   2. promtool check rules + promtool test rules (k8s/monitoring/prometheus-rules.test.yaml).
#   3. promtool check metrics on a real /metrics scrape, taken by the observability test
#      after real traffic (tests/observability.rs writes it to $KAFKA_SIDECAR_SCRAPE_OUT).
#
# promtool: $PROMTOOL, else `promtool` on PATH, else extracted from Debian's `prometheus`
# package (apt-get download; nothing is installed or started) into
# target/monitoring-tools/.
#
# Usage: scripts/validate-monitoring.sh [--no-promtool] [--no-scrape] [--scrape FILE]
#   --no-promtool  only the python checks (1)
#   --no-scrape    skip 3
#   --scrape FILE  check FILE instead of running the test for a scrape
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

use_promtool=1
take_scrape=1
scrape_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-promtool) use_promtool=0 ;;
    --no-scrape) take_scrape=0 ;;
    --scrape) scrape_file="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

dir=k8s/monitoring
step() { printf -- '--- %s\n' "$*"; }

step "dashboard, rules and docs reference only declared metrics"
python3 - "$dir/grafana-dashboard.json" "$dir/prometheus-rules.yaml" docs/metrics.md src/admin.rs <<'PY'
import json, re, sys

dash_path, rules_path, docs_path, admin_path = sys.argv[1:]
errors = []

# Declared names: the `pub const X: &str = "kafka_sidecar_..."` items of `mod names`.
admin = open(admin_path, encoding="utf-8").read()
m = re.search(r"pub mod names \{(.*?)\n\}", admin, re.S)
if not m:
    sys.exit(f"{admin_path}: no `pub mod names` block")
declared = set(re.findall(r'pub const \w+: &str =\s*"(kafka_sidecar_\w+)";', m.group(1)))
if len(declared) < 10:
    sys.exit(f"{admin_path}: only {len(declared)} metric names found; has the format changed?")

TOKEN = re.compile(r"\bkafka_sidecar_\w+")

def base(name):
    """The declared metric a series name belongs to (histogram series have suffixes)."""
    if name in declared:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in declared:
            return name[: -len(suffix)]
    return None

def check_expr(where, expr, seen):
    if not isinstance(expr, str) or not expr.strip():
        errors.append(f"{where}: empty expression")
        return
    for tok in TOKEN.findall(expr):
        b = base(tok)
        if b is None:
            errors.append(f"{where}: unknown metric {tok}")
        else:
            seen.add(b)

# --- dashboard
try:
    dash = json.load(open(dash_path, encoding="utf-8"))
except ValueError as e:
    sys.exit(f"{dash_path}: not JSON: {e}")
for key in ("title", "uid", "panels", "templating", "schemaVersion"):
    if key not in dash:
        errors.append(f"{dash_path}: missing top-level {key!r}")
variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
dash_seen = set()
ids = set()

def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))

for i, p in enumerate(walk_panels(dash.get("panels", []))):
    where = f"{dash_path}: panel {p.get('title', i)!r}"
    pid = p.get("id")
    if pid in ids:
        errors.append(f"{where}: duplicate id {pid}")
    ids.add(pid)
    g = p.get("gridPos", {})
    if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24:
        errors.append(f"{where}: bad gridPos {g}")
    if p.get("type") == "row":
        continue
    if not p.get("targets"):
        errors.append(f"{where}: no targets")
    for t in p.get("targets", []):
        check_expr(where, t.get("expr"), dash_seen)
    for d in [p.get("datasource", {})] + [t.get("datasource", {}) for t in p.get("targets", [])]:
        uid = d.get("uid", "") if isinstance(d, dict) else ""
        if uid.startswith("$") and uid.strip("${}") not in variables:
            errors.append(f"{where}: data source {uid} is not a dashboard variable")
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v.get("query")
        check_expr(f"{dash_path}: variable {v.get('name')}", q.get("query") if isinstance(q, dict) else q, dash_seen)
for a in dash.get("annotations", {}).get("list", []):
    if "expr" in a:
        check_expr(f"{dash_path}: annotation {a.get('name')}", a["expr"], dash_seen)
# Every $var used in a query is defined.
for used in set(re.findall(r"\$(\w+)", json.dumps(dash))):
    if not used.startswith("__") and used not in variables:
        errors.append(f"{dash_path}: variable ${used} is used but not defined")
for missing in sorted(declared - dash_seen):
    errors.append(f"{dash_path}: no panel shows {missing}")

# --- rules (structure; promtool checks the PromQL)
try:
    import yaml
except ImportError:
    yaml = None
    print("python3-yaml missing: rule file structure is left to promtool", file=sys.stderr)
if yaml is not None:
    rules = yaml.safe_load(open(rules_path, encoding="utf-8"))
    groups = rules.get("groups") if isinstance(rules, dict) else None
    if not groups:
        errors.append(f"{rules_path}: no groups")
    alerts = set()
    for g in groups or []:
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            where = f"{rules_path}: {name}"
            if not name:
                errors.append(f"{rules_path}: rule without alert/record name")
            check_expr(where, r.get("expr"), set())
            if "alert" in r:
                alerts.add(name)
                if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    errors.append(f"{where}: labels.severity must be critical, warning or info")
                if not r.get("annotations", {}).get("summary"):
                    errors.append(f"{where}: no annotations.summary")
    for need in ("KafkaSidecarActiveClusterUnreachable", "KafkaSidecarConfigReloadFailing",
                 "KafkaSidecarSessionsCutOffDuringSwitch"):
        if need not in alerts:
            errors.append(f"{rules_path}: alert {need} is missing")

# --- docs: documents exactly the declared metrics
docs = open(docs_path, encoding="utf-8").read()
documented = {b for b in (base(t) for t in TOKEN.findall(docs)) if b}
unknown = {t for t in TOKEN.findall(docs) if base(t) is None}
for t in sorted(unknown):
    errors.append(f"{docs_path}: mentions undeclared metric {t}")
for t in sorted(declared - documented):
    errors.append(f"{docs_path}: does not document {t}")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(declared)} declared metrics; dashboard shows all of them; rules and docs consistent")
PY

[ "$use_promtool" = 1 ] || { echo "promtool checks skipped (--no-promtool)"; exit 0; }

find_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then echo "$PROMTOOL"; return; fi
  if command -v promtool >/dev/null 2>&1; then command -v promtool; return; fi
  local cache="${CARGO_TARGET_DIR:-target}/monitoring-tools"
  if [ -x "$cache/promtool" ]; then echo "$cache/promtool"; return; fi
  # Debian's prometheus package ships promtool (a static binary). Extract it only:
  # installing the package would pull in a web UI and start a daemon.
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || { rm -rf "$tmp"; return 1; }
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$cache"
  cp "$tmp/x/usr/bin/promtool" "$cache/promtool"
  rm -rf "$tmp"
  echo "$cache/promtool"
}

if ! promtool=$(find_promtool); then
  echo "error: promtool not found and not obtainable from apt (prometheus package); set PROMTOOL or pass --no-promtool" >&2
  exit 1
fi
promtool=$(readlink -f "$promtool")
step "$("$promtool" --version 2>&1 | head -1)"

step "promtool check rules"
"$promtool" check rules "$dir/prometheus-rules.yaml"
step "promtool test rules"
(cd "$dir" && "$promtool" test rules prometheus-rules.test.yaml)

[ "$take_scrape" = 1 ] || { echo "scrape check skipped (--no-scrape)"; exit 0; }
if [ -z "$scrape_file" ]; then
  step "taking a /metrics scrape after real traffic (tests/observability.rs)"
  tmpdir=$(mktemp -d)
  trap 'rm -rf "$tmpdir"' EXIT
  scrape_file="$tmpdir/scrape.txt"
  test_name=metrics_move_with_real_traffic
  if cargo nextest --version >/dev/null 2>&1; then
    KAFKA_SIDECAR_SCRAPE_OUT="$scrape_file" cargo nextest run --locked --test observability \
      -E "test(=$test_name)" --status-level fail --final-status-level fail
  else
    KAFKA_SIDECAR_SCRAPE_OUT="$scrape_file" cargo test --locked --test observability -- --exact "$test_name"
  fi
  [ -s "$scrape_file" ] || { echo "error: the test wrote no scrape to $scrape_file" >&2; exit 1; }
fi
step "promtool check metrics ($(grep -c '^kafka_sidecar_' "$scrape_file") kafka_sidecar samples)"
"$promtool" check metrics < "$scrape_file"
echo "monitoring files valid"
