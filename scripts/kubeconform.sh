#!/usr/bin/env bash
# Validates Kubernetes manifests offline with kubeconform against the schemas that
# scripts/provision.sh extracted into .cache/k8s-schemas, once per Kubernetes version there
# (strict: unknown fields fail). Extra arguments go to kubeconform; "-" reads stdin:
#   .cache/bin/helm template helm/driftline | scripts/kubeconform.sh -skip PrometheusRule -
# Custom resources (PrometheusRule, ServiceMonitor) have no schema there: skip them and check
# their content another way (promtool check rules).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCHEMAS="$ROOT/.cache/k8s-schemas"
KC="$ROOT/.cache/bin/kubeconform"
if [ ! -x "$KC" ] || [ ! -f "$SCHEMAS/.versions" ]; then
  echo "kubeconform.sh: run scripts/provision.sh first (no .cache/bin/kubeconform or schemas)" >&2
  exit 2
fi
# The stamp reads "<wheel version>:<k8s versions>".
versions=$(cut -d: -f2 "$SCHEMAS/.versions")
input=""
if [ "${*: -1}" = "-" ]; then
  # stdin can be read once; keep it for every version.
  input=$(cat)
fi
run() {
  "$KC" -strict -summary -kubernetes-version "$1" \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "${@:2}"
}
rc=0
for v in $versions; do
  echo "kubeconform: Kubernetes $v" >&2
  if [ -n "$input" ]; then
    printf '%s\n' "$input" | run "$v" "$@" || rc=1
  else
    run "$v" "$@" || rc=1
  fi
done
exit "$rc"
