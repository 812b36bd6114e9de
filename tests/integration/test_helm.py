"""The Helm chart, rendered by the real helm: lint, Kubernetes schema validation, security,
secrets, monitoring toggles, the state backends (Kafka by default, several replicas, no PVC;
SQLite for one replica) with their render-time refusals, and the rendered config.toml loaded
by Driftline itself.

Tools: helm (built by scripts/provision.sh into .cache/bin) and kubeconform with the
Kubernetes JSON schemas that provision.sh extracts offline into .cache/k8s-schemas. Missing
tools skip these tests on a developer's machine and fail them under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "driftline"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CACHE = REPO / ".cache"
# The oldest Kubernetes the chart supports and the newest whose schemas provision.sh carries.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Custom resources: no Kubernetes schema; checked structurally here and by promtool.
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")
SECRET_KEY = re.compile(r"(?i)(password|secret|token|webhook_url|api_key|hmac|credential|authorization)")
ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")

CASES = [pytest.param((), id="default")] + [
    pytest.param(("-f", str(f)), id=f.stem) for f in CI_VALUES
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: run scripts/provision.sh)")
    pytest.skip(reason)


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        str(CACHE / "bin" / name) if (CACHE / "bin" / name).is_file() else None
    )
    if path is None:
        _unavailable(f"{name} not found on PATH or in .cache/bin")
    return path


@pytest.fixture(scope="module")
def helm() -> str:
    return _tool("helm")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def render_text(helm: str, *args: str, namespace: str = "driftline") -> str:
    out = _run([helm, "template", "driftline", str(CHART), "--namespace", namespace,
                "--kube-version", K8S_VERSIONS[0], *args])
    assert out.returncode == 0, f"helm template {' '.join(args)} failed:\n{out.stderr}"
    return out.stdout


def render(helm: str, *args: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(helm, *args)) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def workload(docs: list[dict]) -> dict:
    (w,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return w


def config_toml(docs: list[dict]) -> str:
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if "config.toml" in d.get("data", {})]
    return cm["data"]["config.toml"]


# -- lint and schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("values", CASES)
def test_helm_lint_strict(helm: str, values: tuple[str, ...]) -> None:
    out = _run([helm, "lint", "--strict", str(CHART), *values])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", CASES)
def test_manifests_validate_against_kubernetes_schemas(
    helm: str, values: tuple[str, ...], tmp_path: Path
) -> None:
    kubeconform = _tool("kubeconform")
    schemas = CACHE / "k8s-schemas"
    for version in K8S_VERSIONS:
        if not (schemas / f"v{version}-local-strict").is_dir():
            _unavailable(f"Kubernetes {version} schemas missing in {schemas}")
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(render_text(helm, *values))
    # file:// matters: kubeconform resolves the schemas' relative $refs only from a URL.
    location = (
        f"file://{schemas}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}"
        "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    for version in K8S_VERSIONS:
        out = _run([kubeconform, "-strict", "-summary", "-output", "json",
                    "-kubernetes-version", version, "-schema-location", location,
                    "-skip", ",".join(CRD_KINDS), str(manifest)])
        report = json.loads(out.stdout)
        assert out.returncode == 0, json.dumps(report, indent=1)
        summary = report["summary"]
        # Every built-in object was checked against a schema: none skipped, none missing.
        n_builtin = sum(1 for d in yaml.safe_load_all(manifest.read_text())
                        if d and d["kind"] not in CRD_KINDS)
        assert summary["valid"] == n_builtin, (version, summary)
        assert summary["errors"] == summary["invalid"] == 0, (version, report)


def test_kubeconform_rejects_a_misspelt_field(helm: str, tmp_path: Path) -> None:
    """The validation can fail: a typo in the security context is caught (strict schemas)."""
    kubeconform = _tool("kubeconform")
    bad = render_text(helm).replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:")
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(bad)
    location = (f"file://{CACHE / 'k8s-schemas'}/v{K8S_VERSIONS[0]}-local-strict"
                "/{{ .ResourceKind }}{{ .KindSuffix }}.json")
    out = _run([kubeconform, "-strict", "-schema-location", location, str(manifest)])
    assert out.returncode != 0
    assert "readOnlyRootFileSystem" in out.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (("--set", "replicaCount=-1"), "/replicaCount"),
        (("--set", "nope=1"), "nope"),
        (("--set", "config.http.host=127.0.0.1"), "/config/http/host"),
        (("--set-json", "config.kafka.bootstrap_servers=[]"), "/config/kafka/bootstrap_servers"),
        (("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy"),
        (("--set", "config.state.dir=relative/state"), "/config/state/dir"),
        (("--set", "serviceMonitor.interval=often"), "/serviceMonitor/interval"),
        (("--set-json", "config.models=[]"), "/config/models"),
    ],
)
def test_schema_rejects_bad_values(helm: str, setting: tuple[str, str], message: str) -> None:
    out = _run([helm, "template", "driftline", str(CHART), *setting])
    assert out.returncode != 0, f"{setting} rendered"
    assert message in out.stderr, out.stderr


def literal_secrets(node, path: str) -> list[str]:
    """Paths of secret-looking keys whose value is not (or does not use) a "${VAR}" reference.

    >>> literal_secrets({"kafka": {"sasl_plain_password": "x", "token": "${T}"}}, "config")
    ['config.kafka.sasl_plain_password']
    """
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str) and v and SECRET_KEY.search(k) and not ENV_REF.search(v):
                found.append(f"{path}.{k}")
            found.extend(literal_secrets(v, f"{path}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(literal_secrets(v, f"{path}[{i}]"))
    return found


# -- security -------------------------------------------------------------------------------


@pytest.mark.parametrize("values", CASES)
def test_secure_context(helm: str, values: tuple[str, ...]) -> None:
    docs = render(helm, *values)
    w = workload(docs)
    pod = w["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    for sa in by_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] >= 30
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == psc["runAsUser"] > 0
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc
    # Probes on the health endpoints of the named HTTP port.
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    config = tomllib.loads(config_toml(docs))
    assert c["ports"] == [{"name": "http", "containerPort": config["http"]["port"], "protocol": "TCP"}]
    assert config["http"]["host"] == "0.0.0.0"
    # With a read-only root, every path Driftline writes is a mount: /tmp (numba cache) and
    # the state directory (state database, audit log, reports).
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert "emptyDir" in volumes[mounts["/tmp"]]
    state_dir = config["state"]["dir"]
    assert mounts[state_dir] == "state"
    for path in (config["audit"]["path"], config["reports"]["dir"]):
        assert Path(path).is_relative_to(state_dir), path
    assert mounts["/etc/driftline"] == "config"
    assert c["args"] == ["run", "--config", "/etc/driftline/config.toml"]


@pytest.mark.parametrize("values", CASES)
def test_no_secret_value_in_any_configmap(helm: str, values: tuple[str, ...]) -> None:
    docs = render(helm, *values)
    assert not by_kind(docs, "Secret"), "the chart must not create Secrets from values"
    for cm in by_kind(docs, "ConfigMap"):
        if "config.toml" not in cm["data"]:
            continue
        leaks = literal_secrets(tomllib.loads(cm["data"]["config.toml"]), "config")
        assert not leaks, f"literal secrets in ConfigMap {cm['metadata']['name']}: {leaks}"
    # Secret env vars come only from secretKeyRef, never as literal values.
    (c,) = workload(docs)["spec"]["template"]["spec"]["containers"]
    secret_vars = set(yaml.safe_load((CHART / "values.yaml").read_text())["secrets"]["env"])
    for e in c["env"]:
        if e["name"] in secret_vars:
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], e


def test_literal_secret_fails_the_render(helm: str) -> None:
    for setting in ("config.kafka.sasl_plain_password=hunter2",
                    "config.http.api_token=abc123",
                    "config.sinks.slack.webhook_url=https://chat.invalid/T000/B000"):
        out = _run([helm, "template", "driftline", str(CHART), "--set", setting])
        assert out.returncode != 0, setting
        key = setting.split("=", 1)[0]
        assert f"{key} holds a literal secret" in out.stderr, out.stderr
        assert setting.split("=", 1)[1] not in out.stdout


def test_secrets_come_from_the_existing_secret(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "ha-sasl-values.yaml"))
    (c,) = workload(docs)["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs["KAFKA_PASSWORD"] == {"name": "driftline-credentials", "key": "kafka-password", "optional": True}
    assert refs["DRIFTLINE_API_TOKEN"]["key"] == "api-token"
    cfg = tomllib.loads(config_toml(docs))
    assert cfg["kafka"]["sasl_plain_password"] == "${KAFKA_PASSWORD}"
    assert cfg["kafka"]["security_protocol"] == "SASL_SSL"
    # Without existingSecret no secret env var is rendered at all.
    (c0,) = workload(render(helm))["spec"]["template"]["spec"]["containers"]
    assert not [e for e in c0["env"] if "valueFrom" in e]


# -- workload shapes ------------------------------------------------------------------------


def test_persistence_makes_a_statefulset_with_a_claim(helm: str) -> None:
    default = render(helm)
    w = workload(default)
    assert w["kind"] == "Deployment"
    vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in vols["state"]
    docs = render(helm, "-f", str(CHART / "ci" / "persistence-values.yaml"))
    s = workload(docs)
    assert s["kind"] == "StatefulSet"
    assert s["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (claim,) = s["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    assert "state" not in {v["name"] for v in s["spec"]["template"]["spec"]["volumes"]}
    services = {svc["metadata"]["name"]: svc for svc in by_kind(docs, "Service")}
    assert services[s["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_three_replicas_with_sasl_ssl(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "ha-sasl-values.yaml"))
    w = workload(docs)
    assert w["spec"]["replicas"] == 3
    # One pod at a time during rollouts: each replacement is one consumer-group rebalance.
    assert w["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
    cfg = tomllib.loads(config_toml(docs))
    (c,) = w["spec"]["template"]["spec"]["containers"]
    mounted = [m["mountPath"] for m in c["volumeMounts"]]
    assert any(Path(cfg["kafka"]["ssl_cafile"]).is_relative_to(m) for m in mounted)
    assert len(cfg["kafka"]["bootstrap_servers"]) == 3


def test_service_and_selectors_match(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-values.yaml"))
    w = workload(docs)
    labels = w["spec"]["template"]["metadata"]["labels"]
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= by_kind(docs, "Service")[0]["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (np_,) = by_kind(docs, "NetworkPolicy")
    assert np_["spec"]["podSelector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
    assert np_["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np_["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_config_change_rolls_the_pods(helm: str) -> None:
    a = workload(render(helm))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    b = workload(render(helm, "--set", "config.kafka.group_id=other"))["spec"]["template"][
        "metadata"]["annotations"]["checksum/config"]
    assert a != b


# -- state: Kafka by default, several replicas, no PVC ---------------------------------------


def _models_with(**changes) -> list[dict]:
    """values.yaml's models with the first model's keys changed (helm replaces lists whole)."""
    models = yaml.safe_load((CHART / "values.yaml").read_text())["config"]["models"]
    models[0].update(changes)
    return models


def _values_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "override-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_defaults_run_several_replicas_on_kafka_state_without_a_claim(helm: str) -> None:
    docs = render(helm)
    w = workload(docs)
    pod = w["spec"]["template"]["spec"]
    assert w["kind"] == "Deployment"
    assert w["spec"]["replicas"] > 1
    # No PVC anywhere: the state directory is an emptyDir, a cache of the changelog.
    assert not by_kind(docs, "PersistentVolumeClaim") and "volumeClaimTemplates" not in w["spec"]
    cfg = tomllib.loads(config_toml(docs))
    assert cfg["state"]["backend"] == "kafka"
    volumes = {v["name"]: v for v in pod["volumes"]}
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert volumes[mounts[cfg["state"]["dir"]]["name"]] == {"name": "state", "emptyDir": {}}
    # Every model's reference lies in a read-only mount of the reference profiles.
    for m in cfg["models"]:
        (mount,) = [mp for mp in mounts if Path(m["reference"]).is_relative_to(mp)]
        assert mounts[mount]["readOnly"] is True
        assert volumes[mounts[mount]["name"]]["configMap"] == {"name": "driftline-references"}
    # Rollouts and drains take one pod at a time and leave the others running.
    assert w["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < w["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
    # Pods spread over nodes, counting exactly this release's pods.
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway" and spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
    # A pod that restores is not ready; a graceful stop has time for its last transaction,
    # longer than the broker waits before aborting one left open.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] * 1000 > cfg["state"]["transaction_timeout_ms"]


def test_default_config_resolves_to_the_kafka_backend(helm: str, tmp_path: Path) -> None:
    """Driftline's own loader reads the chart's defaults as the kafka backend with every model's
    reference set, and refuses the same file with one reference removed, as the chart does."""
    text = config_toml(render(helm))
    path = tmp_path / "config.toml"
    path.write_text(text)
    out = _run([*_driftline_cli(), "check-config", "--config", str(path), "--format", "json"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert resolved["state"]["backend"] == "kafka"
    assert all(m["reference"].startswith("/") for m in resolved["models"])
    without = text.replace('reference = "/etc/driftline-references/credit-risk.json"', 'reference = ""')
    assert without != text
    path.write_text(without)
    out = _run([*_driftline_cli(), "check-config", "--config", str(path)], cwd=tmp_path)
    assert out.returncode != 0
    assert "needs a reference file for every model" in out.stdout + out.stderr


def test_sqlite_backend_stays_selectable_for_one_replica(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "sqlite-values.yaml"))
    w = workload(docs)
    assert w["kind"] == "StatefulSet" and w["spec"]["replicas"] == 1
    cfg = tomllib.loads(config_toml(docs))
    assert cfg["state"]["backend"] == "sqlite"
    assert cfg["models"][0]["reference"] == ""  # a warm-up reference is fine with one process
    # No reference under the mount path: no references volume (and no ConfigMap to wait for).
    assert "references" not in {v["name"] for v in w["spec"]["template"]["spec"]["volumes"]}
    # One replica on an emptyDir also renders (a restart re-warms; NOTES say so).
    w = workload(render(helm, "--set", "config.state.backend=sqlite", "--set", "replicaCount=1"))
    assert w["kind"] == "Deployment" and w["spec"]["replicas"] == 1


def test_references_volume_replaces_the_configmap(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "ha-sasl-values.yaml"))
    w = workload(docs)
    pod = w["spec"]["template"]["spec"]
    (ref,) = [v for v in pod["volumes"] if v["name"] == "references"]
    assert ref == {"name": "references",
                   "persistentVolumeClaim": {"claimName": "driftline-references", "readOnly": True}}
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "references"]
    assert mount == {"name": "references", "mountPath": "/etc/driftline-references", "readOnly": True}
    # The values' own spread constraints replace the default one.
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    cfg = tomllib.loads(config_toml(docs))
    assert cfg["state"]["topic_prefix"] == "driftline-prod" and cfg["state"]["replication_factor"] == 3
    assert "topologySpreadConstraints" not in workload(
        render(helm, "--set", "defaultTopologySpread.enabled=false"))["spec"]["template"]["spec"]


SQLITE_LOSES = 'loses state: the sqlite backend keeps each pod\'s state'
NO_REFERENCE = 'config.models[0].reference (model "credit-risk") is empty, but config.state.backend="kafka" needs a reference profile for every model'


@pytest.mark.parametrize(
    ("settings", "values", "message"),
    [
        pytest.param(("--set", "config.state.backend=sqlite"), None,
                     'replicaCount=2 with config.state.backend="sqlite" ' + SQLITE_LOSES, id="sqlite-2-replicas"),
        # One PVC per pod is not a shared volume: the moved partition's state stays behind.
        pytest.param(("-f", str(CHART / "ci" / "sqlite-values.yaml"), "--set", "replicaCount=3"), None,
                     'replicaCount=3 with config.state.backend="sqlite" ' + SQLITE_LOSES, id="sqlite-pvc-3-replicas"),
        # Unset means Driftline's default, sqlite.
        pytest.param(("--set", "config.state.backend=null"), None,
                     'replicaCount=2 with config.state.backend="sqlite" ' + SQLITE_LOSES, id="backend-unset"),
        pytest.param((), {"config": {"models": _models_with(reference="")}}, NO_REFERENCE, id="kafka-no-reference"),
        pytest.param(("--set", "replicaCount=1"), {"config": {"models": _models_with(reference="")}}, NO_REFERENCE,
                     id="kafka-no-reference-one-replica"),
        pytest.param(("--set", "references.existingConfigMap="), None,
                     '= "/etc/driftline-references/credit-risk.json" is under references.mountPath, but nothing is '
                     "mounted there", id="reference-without-source"),
        pytest.param((), {"config": {"models": _models_with(reference="credit-risk.json")}},
                     '= "credit-risk.json" is relative', id="relative-reference"),
        pytest.param((), {"config": {"models": _models_with(reference="/tmp/credit-risk.json")}},
                     "/tmp is an emptyDir, empty when the pod starts", id="reference-in-tmp"),
        pytest.param((), {"config": {"models": _models_with(reference="/var/lib/driftline/credit-risk.json")}},
                     "config.state.dir is Driftline's own state volume", id="reference-in-state-dir"),
        pytest.param((), {"config": {"models": _models_with(reference="/opt/refs/credit-risk.json")}},
                     "no volume is mounted there", id="reference-nowhere"),
        pytest.param(("--set", "references.mountPath=/etc/driftline/references"), None,
                     'references.mountPath="/etc/driftline/references" must not be /etc/driftline or inside it',
                     id="references-in-config-mount"),
    ],
)
def test_render_refuses_lossy_or_unreadable_state_settings(
    helm: str, settings: tuple[str, ...], values: dict | None, message: str, tmp_path: Path
) -> None:
    args = [*settings] + (["-f", _values_file(tmp_path, values)] if values else [])
    out = _run([helm, "template", "driftline", str(CHART), *args])
    assert out.returncode != 0, f"{args} rendered"
    assert "execution error" in out.stderr and message in out.stderr, out.stderr


def test_a_reference_on_an_extra_volume_renders(helm: str, tmp_path: Path) -> None:
    """extraVolumeMounts are a valid home for references too (the refusal is not blanket)."""
    values = {"config": {"models": _models_with(reference="/srv/profiles/credit-risk.json")},
              "extraVolumes": [{"name": "profiles", "secret": {"secretName": "profiles"}}],
              "extraVolumeMounts": [{"name": "profiles", "mountPath": "/srv/profiles", "readOnly": True}]}
    w = workload(render(helm, "-f", _values_file(tmp_path, values)))
    # The model's reference is elsewhere, so the references ConfigMap is not mounted.
    assert "references" not in {v["name"] for v in w["spec"]["template"]["spec"]["volumes"]}


def _render_notes(helm: str, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips NOTES): a copy of the chart
    renders it through tpl into a document."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "NOTES.src")
    (chart / "templates" / "notes-under-test.yaml").write_text(
        'notes: {{ tpl (.Files.Get "NOTES.src") . | toJson }}\n')
    out = _run([helm, "template", "driftline", str(chart), "--namespace", "driftline",
                "--show-only", "templates/notes-under-test.yaml", *args])
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["notes"]


def test_notes_name_the_state_backend(helm: str, tmp_path: Path) -> None:
    notes = _render_notes(helm, tmp_path)
    assert "(2 replica(s))" in notes
    assert "driftline-partition-changelog" in notes and "State is in Kafka" in notes
    assert "kubectl -n driftline create configmap driftline-references" in notes
    notes = _render_notes(helm, tmp_path / "b", "--set", "config.state.topic_prefix=mon",
                          "--set-json", 'references.volume={"secret":{"secretName":"p"}}')
    assert "mon-partition-changelog" in notes and "create configmap" not in notes
    notes = _render_notes(helm, tmp_path / "c", "--set", "config.state.backend=sqlite", "--set", "replicaCount=1")
    assert "sqlite backend: a restarted pod loses its windows" in notes and "State is in Kafka" not in notes


# -- the README's topics are the ones Driftline creates -----------------------------------------


def _readme_section(title: str) -> str:
    text = (CHART / "README.md").read_text()
    start = text.index(f"\n### {title}\n")
    return text[start:text.index("\n### ", start + 1)]


def test_readme_topics_table_matches_what_driftline_creates() -> None:
    """Oracle: monitor.changelog.InternalTopics.specs, which `driftline run` creates."""
    from monitor.changelog import InternalTopics

    inputs, models = 7, 5  # distinct, so each row's partition source is unambiguous
    specs = InternalTopics("driftline").specs(inputs, models)
    rows = re.findall(r"^\| `<prefix>(-[a-z-]+)` \| ([^|]+) \| ([^|]+) \|", _readme_section("Topics"), flags=re.M)
    documented: dict[str, tuple[int, dict[str, str]]] = {}
    previous: dict[str, str] = {}
    for suffix, partitions, configs in rows:
        n = inputs if "topics.predictions" in partitions else models if "state.model_partitions" in partitions else None
        cfg = previous if configs.strip() == "as above" else dict(re.findall(r"`([a-z.]+)=([^`]+)`", configs))
        documented[f"driftline{suffix}"] = (n, cfg)
        previous = cfg
    assert documented == specs


def test_readme_precreate_commands_match_what_driftline_creates() -> None:
    """The kafka-topics.sh lines for a principal without Create make the topics that
    `driftline run` would (defaults: 6 input partitions, state.model_partitions 6)."""
    from monitor.changelog import InternalTopics

    section = _readme_section("Topics")
    common = dict(re.findall(r"--config ([a-z.]+)=(\S+)", re.search(r'^C="([^"]+)"', section, flags=re.M).group(1)))
    made = {}
    for line in re.findall(r"^\$K (.+)$", section, flags=re.M):
        topic = re.search(r"--topic (\S+)", line).group(1)
        cfg = dict(re.findall(r"--config ([a-z.]+)=(\S+)", line))
        if "$C" in line:
            cfg.update(common)
        made[topic] = (int(re.search(r"--partitions (\d+)", line).group(1)), cfg)
    assert made == InternalTopics("driftline").specs(6, 6)


# -- monitoring objects ---------------------------------------------------------------------


def test_monitoring_objects_absent_by_default(helm: str) -> None:
    docs = render(helm)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "NetworkPolicy"}
    assert not [cm for cm in by_kind(docs, "ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]]


def test_monitoring_objects_present_when_enabled(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-values.yaml"))
    (pr,) = by_kind(docs, "PrometheusRule")
    groups = {g["name"]: g for g in pr["spec"]["groups"]}
    assert set(groups) == {"driftline.monitor", "driftline.models"}
    for g in groups.values():
        for rule in g["rules"]:
            assert rule["labels"]["team"] == "ml-platform"
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert {"summary", "description"} <= set(rule["annotations"])
            # Scoped to this release's job and namespace.
            assert 'job="driftline"' in rule["expr"] and 'namespace="driftline"' in rule["expr"]
    (dash,) = [cm for cm in by_kind(docs, "ConfigMap") if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert dash["metadata"]["annotations"] == {"grafana_folder": "Driftline"}
    shipped = json.loads((CHART / "dashboards" / "driftline.json").read_text())
    assert json.loads(dash["data"]["driftline.json"]) == shipped
    # Model alerts stay off unless asked for.
    docs = render(helm, "--set", "prometheusRule.enabled=true")
    (pr,) = by_kind(docs, "PrometheusRule")
    assert [g["name"] for g in pr["spec"]["groups"]] == ["driftline.monitor"]


# -- the rendered config is Driftline's config ----------------------------------------------


def _driftline_cli() -> list[str]:
    exe = Path(sys.executable).with_name("driftline")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "monitor.cli"]


@pytest.mark.parametrize("values", CASES)
def test_configmap_toml_loads_with_driftline_check_config(
    helm: str, values: tuple[str, ...], tmp_path: Path
) -> None:
    docs = render(helm, *values)
    text = config_toml(docs)
    path = tmp_path / "config.toml"
    path.write_text(text)
    secret_vars = yaml.safe_load((CHART / "values.yaml").read_text())["secrets"]["env"]
    env = {k: v for k, v in os.environ.items() if k not in secret_vars}
    env.update({var: f"dummy-{var.lower()}-value" for var in secret_vars})
    out = _run([*_driftline_cli(), "check-config", "--config", str(path)], env=env, cwd=tmp_path)
    assert out.returncode == 0, f"driftline check-config rejected the chart's config:\n{out.stdout}\n{out.stderr}\n---\n{text}"
    assert "valid" in out.stdout.splitlines()[0]
    # Secret values resolved from the environment are masked in the printout.
    for var in ("KAFKA_PASSWORD", "DRIFTLINE_API_TOKEN"):
        if "${" + var + "}" in text:
            assert f"dummy-{var.lower()}-value" not in out.stdout


def test_configmap_toml_is_values_config(helm: str) -> None:
    """The TOML writer loses nothing: the rendered file parses back to values.yaml's config."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    parsed = tomllib.loads(config_toml(render(helm)))
    assert parsed == values
    # Whole numbers are TOML integers (ints where Driftline wants ints), fractions floats.
    assert isinstance(parsed["join"]["max_pending"], int)
    assert parsed["models"][0]["decision_threshold"] == 0.5


def test_bad_config_is_caught_by_check_config(helm: str, tmp_path: Path) -> None:
    """The loader is a real check: a rule on an unknown metric renders but does not load."""
    models = yaml.safe_load((CHART / "values.yaml").read_text())["config"]["models"]
    models[0]["rules"][0]["metric"] = "psy"
    override = tmp_path / "bad-values.yaml"
    override.write_text(yaml.safe_dump({"config": {"models": models}}))
    docs = render(helm, "-f", str(override))
    path = tmp_path / "config.toml"
    path.write_text(config_toml(docs))
    out = _run([*_driftline_cli(), "check-config", "--config", str(path)], cwd=tmp_path)
    assert out.returncode != 0
    assert "psy" in out.stdout + out.stderr


# -- chart metadata and documentation -------------------------------------------------------


def test_chart_metadata_matches_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    assert chart["name"] == "driftline"


def _leaves(node: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and path not in ("resources", "secrets.env", "dashboard.labels"):
            out.extend(_leaves(v, path + "."))
        else:
            out.append(path)
    return out


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1]
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    missing = [p for p in _leaves(values) if p != "config" and not p.startswith("config.")
               and p not in documented]
    assert not missing, f"values without a row in the README values table: {missing}"
    stale = [p for p in documented if p not in _leaves(values) and p != "config"
             and not any(p.startswith(q + ".") for q in _leaves(values))]
    assert not stale, f"README documents values that do not exist: {stale}"
    # And every value has its own comment line just above it in values.yaml.
    leaves = set(_leaves(values))
    stack: list[tuple[int, str]] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [m.group(2)])
        stack.append((indent, m.group(2)))
        if path in leaves and not path.startswith("config"):
            assert lines[i - 1].strip().startswith("#"), f"values.yaml: {path} has no comment"
