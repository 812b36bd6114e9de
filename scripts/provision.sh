#!/usr/bin/env bash
# Provisions the real servers and tools that tests/integration and the chart checks use:
#   kafka       Apache Kafka 4.x broker jars (Maven Central, scripts/kafka-pom.xml) -> .cache/kafka/libs
#   prometheus  Debian's prometheus + prometheus-alertmanager (root with apt-get only)
#   chromium    Debian's chromium, the headless browser of tests/integration/test_ui_browser.py
#               (root with apt-get only)
#   helm        helm v3 built from the Go module proxy -> .cache/bin/helm
#   kubeconform built from the Go module proxy -> .cache/bin/kubeconform
#   k8s-schemas Kubernetes JSON schemas for kubeconform, offline, from the kubernetes-validate
#               wheel on PyPI -> .cache/k8s-schemas (use scripts/kubeconform.sh, which knows the path)
# Idempotent: every step is skipped when its cache is already in place, so a second run takes
# about a second. Each step prints one line. Outside CI a failed step only warns (the tests that
# need it skip); with CI=true it fails the script, because CI must not skip server tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="$ROOT/.cache"
mkdir -p "$CACHE/bin"

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.7.0
# kubernetes-validate's version equals the newest Kubernetes release whose schemas it carries.
K8S_VALIDATE_VERSION=1.37.0
# Validate against the oldest Kubernetes we support and the newest the wheel carries.
K8S_SCHEMA_VERSIONS="1.30.0 1.37.0"

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi

failed=0
say() { printf 'provision: %-12s %s\n' "$1" "$2"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
# A failed step: a warning on a user's machine, a failure under CI (reported at the end so that
# every step's line is printed).
fail_step() {
  if [ "${CI:-}" = "true" ]; then
    say "$1" "FAILED: $2"
    failed=1
  else
    say "$1" "WARNING: $2 (tests that need it will skip)"
  fi
}

step_kafka() {
  local libs="$CACHE/kafka/libs" stamp want t0 tmp log
  # The stamp is the pom's hash: editing the Kafka version in the pom refetches.
  want=$(sha256sum scripts/kafka-pom.xml | cut -d' ' -f1)
  stamp="$CACHE/kafka/pom.sha256"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
    say kafka "cached: $(ls "$libs" | wc -l) jars in .cache/kafka/libs"
    return
  fi
  if ! command -v mvn >/dev/null; then fail_step kafka "mvn not found"; return; fi
  if ! command -v java >/dev/null; then fail_step kafka "java not found"; return; fi
  t0=$(date +%s)
  tmp="$CACHE/kafka/libs.tmp"
  log="$CACHE/kafka/mvn.log"
  rm -rf "$tmp"
  mkdir -p "$CACHE/kafka"
  if mvn -q -B -Dstyle.color=never -f scripts/kafka-pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    rm -rf "$libs"
    mv "$tmp" "$libs"
    echo "$want" >"$stamp"
    say kafka "fetched $(basename "$(ls "$libs"/kafka_2.13-*.jar)" .jar) ($(ls "$libs" | wc -l) jars) in $(elapsed "$t0")"
  else
    # Maven's first [ERROR] line names the artifact; its last ones are generic help links.
    fail_step kafka "mvn dependency:copy-dependencies failed, see .cache/kafka/mvn.log: $(grep -m1 -F '[ERROR]' "$log" | cut -c1-300)"
  fi
}

# Debian's postinst scripts may start the services on their default ports (9090, 9093) where an
# init system runs; a policy-rc.d that answers 101 forbids that. An existing one is kept as is.
step_prometheus() {
  local pkgs="" t0 made_policy=0 log="$CACHE/apt.log"
  command -v prometheus >/dev/null || pkgs=" prometheus"
  command -v prometheus-alertmanager >/dev/null || pkgs="$pkgs prometheus-alertmanager"
  if [ -z "$pkgs" ]; then
    say prometheus "installed: $(prometheus --version 2>&1 | head -n1 | cut -d' ' -f1-3), alertmanager $(prometheus-alertmanager --version 2>&1 | head -n1 | cut -d' ' -f3)"
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail_step prometheus "missing:$pkgs; install as root: apt-get install -y --no-install-recommends$pkgs"
    return
  fi
  t0=$(date +%s)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# Temporary, from driftline scripts/provision.sh: no service starts.\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # also when interrupted mid-install
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0
             install -y --no-install-recommends)
  # --no-install-recommends: prometheus recommends node-exporter, another service we don't need.
  # apt-get update only when the package lists are too old or missing to install from.
  # shellcheck disable=SC2086
  if ! "${apt[@]}" $pkgs >"$log" 2>&1; then
    # shellcheck disable=SC2086
    env DEBIAN_FRONTEND=noninteractive apt-get -qq update >>"$log" 2>&1 || true
    # shellcheck disable=SC2086
    "${apt[@]}" $pkgs >>"$log" 2>&1 || true
  fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
    fail_step prometheus "apt-get install$pkgs failed, see .cache/apt.log: $(tail -n 2 "$log" | tr '\n' ' ')"
    return
  fi
  # Belt and braces: if the install started a service anyway, stop it through its init script,
  # so that nothing of the package listens on the default ports.
  # The init script's status reads the service's own pidfile, so a prometheus that some test
  # started is not mistaken for the service.
  local svc started=""
  for svc in prometheus prometheus-alertmanager; do
    if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
      "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      started="$started $svc"
    fi
  done
  say prometheus "apt-get installed$pkgs in $(elapsed "$t0")${started:+ (stopped services the install started:$started)}"
}

# No service comes with the package, so no policy-rc.d is needed (unlike prometheus).
step_chromium() {
  local t0 log="$CACHE/apt-chromium.log"
  if command -v chromium >/dev/null; then
    say chromium "installed: $(chromium --version 2>/dev/null | head -n1)"
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail_step chromium "missing; install as root: apt-get install -y --no-install-recommends chromium"
    return
  fi
  t0=$(date +%s)
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0
             install -y --no-install-recommends chromium)
  # apt-get update only when the package lists are too old or missing to install from.
  if ! "${apt[@]}" >"$log" 2>&1; then
    env DEBIAN_FRONTEND=noninteractive apt-get -qq update >>"$log" 2>&1 || true
    "${apt[@]}" >>"$log" 2>&1 || true
  fi
  if ! command -v chromium >/dev/null; then
    fail_step chromium "apt-get install chromium failed, see .cache/apt-chromium.log: $(tail -n 2 "$log" | tr '\n' ' ')"
    return
  fi
  say chromium "apt-get installed $(chromium --version 2>/dev/null | head -n1) in $(elapsed "$t0")"
}

# go install into .cache/bin; a stamp file records the version, since `go install`-built
# binaries do not all report the module version themselves.
go_tool() {
  local name=$1 module=$2 version=$3 t0 log="$CACHE/go-$1.log"
  if [ -x "$CACHE/bin/$name" ] && [ "$(cat "$CACHE/bin/.$name.version" 2>/dev/null)" = "$version" ]; then
    say "$name" "cached: .cache/bin/$name $version"
    return
  fi
  if ! command -v go >/dev/null; then fail_step "$name" "go not found"; return; fi
  t0=$(date +%s)
  if GOBIN="$CACHE/bin" GOFLAGS=-buildvcs=false go install "$module@$version" >"$log" 2>&1; then
    echo "$version" >"$CACHE/bin/.$name.version"
    say "$name" "built .cache/bin/$name $version with go install in $(elapsed "$t0")"
  else
    fail_step "$name" "go install $module@$version failed, see .cache/go-$name.log: $(tail -n 2 "$log" | tr '\n' ' ')"
  fi
}

# kubeconform normally downloads schemas from GitHub, which this network cannot reach. The
# kubernetes-validate wheel on PyPI vendors the same schemas. Its "$ref"s point at
# "/api/_definitions.json" under an https "$id" (its own loader maps that URL); dropping the
# "$id" and rewriting the ref to the sibling file "_definitions.json" makes them resolvable by
# kubeconform's file loader. (kubeconform treats a schema that fails to compile as missing.)
step_schemas() {
  local dest="$CACHE/k8s-schemas" stampf="$CACHE/k8s-schemas/.versions" t0 dl="$CACHE/dl"
  local want="$K8S_VALIDATE_VERSION:$K8S_SCHEMA_VERSIONS"
  if [ "$(cat "$stampf" 2>/dev/null)" = "$want" ]; then
    say k8s-schemas "cached: Kubernetes $K8S_SCHEMA_VERSIONS in .cache/k8s-schemas"
    return
  fi
  t0=$(date +%s)
  mkdir -p "$dl"
  if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$dl" "kubernetes-validate==$K8S_VALIDATE_VERSION" >"$CACHE/pip-schemas.log" 2>&1; then
    fail_step k8s-schemas "pip download kubernetes-validate==$K8S_VALIDATE_VERSION failed, see .cache/pip-schemas.log"
    return
  fi
  rm -rf "$dest"
  if "$PY" - "$dl/kubernetes_validate-$K8S_VALIDATE_VERSION-py3-none-any.whl" "$dest" $K8S_SCHEMA_VERSIONS <<'PYEOF'
import json
import pathlib
import sys
import zipfile

wheel, dest, versions = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
prefix = "kubernetes_validate/kubernetes-json-schema/"
count = 0
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if not name.startswith(prefix) or not name.endswith(".json"):
            continue
        folder, _, fname = name[len(prefix):].partition("/")
        if not any(folder in (f"v{v}-local", f"v{v}-local-strict") for v in versions):
            continue
        schema = json.loads(zf.read(name))
        # Without its https "$id" a schema's base is its own file, so the rewritten relative
        # "$ref" finds the sibling _definitions.json on disk.
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        out = dest / folder / fname
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        count += 1
if count == 0:
    sys.exit(f"no schemas for {versions} in {wheel}")
PYEOF
  then
    echo "$want" >"$stampf"
    say k8s-schemas "extracted Kubernetes $K8S_SCHEMA_VERSIONS schemas from kubernetes-validate $K8S_VALIDATE_VERSION in $(elapsed "$t0")"
  else
    fail_step k8s-schemas "could not extract schemas from the kubernetes-validate wheel"
  fi
}

T0=$(date +%s)
step_kafka
step_prometheus
step_chromium
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
step_schemas
say total "$(elapsed "$T0")"
exit "$failed"
