"""The Dockerfile agrees with the Helm chart and the package (no Docker engine here to build it).

Parses the Dockerfile (continuations, comments, ARG defaults, JSON and shell forms) and checks
what the chart and pyproject.toml rely on: the user id, the entrypoint, the config and state
paths, the port, a slim Python base and a final stage without build tools.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "driftline"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|cmake|clang|git|curl|wget|apt-get|apk|pip)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, op: str) -> list[str]:
        return [a for o, a in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile.

    >>> g, st = parse("ARG B=python:3.11-slim\\nFROM ${B} AS x\\nRUN a \\\\\\n  && b\\n")
    >>> g, st[0].base, st[0].name, st[0].instructions
    ({'B': 'python:3.11-slim'}, 'python:3.11-slim', 'x', [('RUN', 'a && b')])
    """
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if stripped.endswith("\\"):
            buf += stripped[:-1].rstrip() + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), re.sub(r"\s+", " ", rest.strip())
        if op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            global_args[k] = v
        elif stages:
            stages[-1].instructions.append((op, rest))
    return global_args, stages


def exec_form(arg: str) -> list[str]:
    return json.loads(arg) if arg.startswith("[") else shlex.split(arg)


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_multi_stage_on_slim_python(dockerfile) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2, "a build stage and a runtime stage"
    final = stages[-1]
    # The virtualenv copied from the build stage links to the base image's interpreter.
    assert {s.base for s in stages} == {final.base}
    assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", final.base), final.base
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    minor = int(project["requires-python"].removeprefix(">=3."))
    assert int(final.base.split(":")[1].split("-")[0].split(".")[1]) >= minor


def test_final_stage_has_no_build_tools(dockerfile) -> None:
    _, stages = dockerfile
    final = stages[-1]
    for run in final.args("RUN"):
        assert not BUILD_TOOLS.search(run), f"final stage runs a build tool: {run}"
    copies = final.args("COPY")
    # Only the built virtualenv comes over from the build stage; no source tree.
    for c in copies:
        assert c.startswith("--from="), f"final stage copies from the context: {c}"
    build_names = {s.name for s in stages[:-1]}
    assert all(c.split()[0].removeprefix("--from=") in build_names for c in copies)
    assert all(c.split()[1] == c.split()[2] == "/opt/driftline" for c in copies)


def test_user_matches_the_chart(dockerfile, values) -> None:
    _, stages = dockerfile
    final = stages[-1]
    (user,) = final.args("USER")
    uid, _, gid = user.partition(":")
    # Numeric, so that runAsNonRoot can be verified without /etc/passwd.
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0
    assert int(uid) == values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"]
    assert int(gid) == values["securityContext"]["runAsGroup"] == values["podSecurityContext"]["runAsGroup"]
    assert int(gid) == values["podSecurityContext"]["fsGroup"]
    (run,) = [r for r in final.args("RUN") if "useradd" in r]
    assert f"--uid {uid}" in run and f"--gid {gid}" in run
    # USER is the last identity change: nothing after it runs as root.
    ops = [o for o, _ in final.instructions]
    assert "RUN" not in ops[ops.index("USER"):]


def test_entrypoint_and_command_match_the_chart_and_package(dockerfile) -> None:
    _, stages = dockerfile
    final = stages[-1]
    (entry,) = final.args("ENTRYPOINT")
    (cmd,) = final.args("CMD")
    assert entry.startswith("["), "exec form, so SIGTERM reaches driftline (not a shell)"
    assert exec_form(entry) == ["driftline"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "driftline" in project["scripts"]
    assert exec_form(cmd) == ["run", "--config", "/etc/driftline/config.toml"]
    workload = (CHART / "templates" / "workload.yaml").read_text()
    # The chart passes the same arguments and mounts its ConfigMap at /etc/driftline.
    assert re.search(r"args:\s*\n\s*- run\s*\n\s*- --config\s*\n\s*- /etc/driftline/config.toml", workload)
    assert "mountPath: /etc/driftline\n" in workload
    assert final.args("STOPSIGNAL") == ["SIGTERM"]


def test_paths_port_and_env_match_the_chart(dockerfile, values) -> None:
    _, stages = dockerfile
    final = stages[-1]
    state_dir = values["config"]["state"]["dir"]
    assert final.args("WORKDIR")[-1] == state_dir
    (useradd,) = [r for r in final.args("RUN") if "useradd" in r]
    assert f"chown 10001:10001 {state_dir}" in useradd
    assert final.args("EXPOSE") == [str(values["config"]["http"]["port"])]
    assert values["service"]["port"] == values["config"]["http"]["port"]
    env = " ".join(final.args("ENV"))
    assert "PATH=/opt/driftline/bin:$PATH" in env
    # Writable scratch only under /tmp, which the chart mounts as an emptyDir.
    workload = (CHART / "templates" / "workload.yaml").read_text()
    for var in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        (value,) = re.findall(rf"\b{var}=(\S+)", env)
        assert value.startswith("/tmp/")
        assert re.search(rf"- name: {var}\s*\n\s*value: {re.escape(value)}\n", workload), var
    labels = " ".join(final.args("LABEL"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f'org.opencontainers.image.version="{project["version"]}"' in labels


def test_build_stage_installs_the_package_from_wheels_only(dockerfile) -> None:
    _, stages = dockerfile
    build = stages[0]
    copied = {c.split()[0] for c in build.args("COPY")}
    assert {"pyproject.toml", "detectors", "monitor"} <= copied
    (install,) = [r for r in build.args("RUN") if "pip install" in r]
    assert "--only-binary=:all:" in install
    assert "/opt/driftline/bin/driftline --help" in install, "the build proves the entry point runs"


def test_dockerignore_keeps_the_context_small() -> None:
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "**", "exclude everything, then allow what the build copies"
    allowed = {r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "detectors", "monitor"}
