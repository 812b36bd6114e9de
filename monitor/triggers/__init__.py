"""Retrain triggers: one module per target kind, a closed registry of kinds, and the sender."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from monitor.triggers.airflow import AirflowTarget
from monitor.triggers.argo import ArgoTarget
from monitor.triggers.base import TriggerCall, TriggerResult, TriggerTarget, retrain_payload
from monitor.triggers.github import GitHubTarget
from monitor.triggers.http import HttpTarget
from monitor.triggers.kubeflow import KubeflowTarget

__all__ = [
    "TARGETS",
    "AirflowTarget",
    "ArgoTarget",
    "GitHubTarget",
    "HttpTarget",
    "KubeflowTarget",
    "TriggerCall",
    "TriggerResult",
    "TriggerTarget",
    "make_target",
    "retrain_payload",
    "target_from_config",
]

TARGETS: dict[str, type[TriggerTarget]] = {
    "airflow": AirflowTarget,
    "argo": ArgoTarget,
    "kubeflow": KubeflowTarget,
    "github": GitHubTarget,
    "http": HttpTarget,
}

# [triggers.target] keys that are not constructor arguments of any target.
_NOT_ARGS = frozenset({"kind"})


def make_target(kind: str, **options: Any) -> TriggerTarget:
    """Build a target from ``[triggers.target]`` keys; keys another kind uses and that are
    empty are ignored, a non-empty key this kind does not take is an error (a likely typo)."""
    try:
        cls = TARGETS[kind]
    except KeyError:
        raise ValueError(f"triggers.target.kind {kind!r} is unknown; available: {sorted(TARGETS)}") from None
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    args: dict[str, Any] = {}
    for key, value in options.items():
        if key in _NOT_ARGS:
            continue
        if key in accepted:
            args[key] = value
        elif value not in (None, "", {}, []):
            raise ValueError(f"triggers.target.{key} is not used by kind = {kind!r} (it takes {sorted(accepted)})")
    return cls(**args)


def target_from_config(target_cfg: Any) -> TriggerTarget:
    """From the config's ``triggers.target`` section (a msgspec struct or a dict).

    Keys left at the section's defaults (``event_type``, ``method``) are not typos, so they
    are passed only to kinds that take them.
    """
    if isinstance(target_cfg, dict):
        options, defaults = dict(target_cfg), {}
    else:
        options = msgspec.structs.asdict(target_cfg)
        defaults = msgspec.structs.asdict(type(target_cfg)())
    kind = options.pop("kind", None)
    if not kind:
        raise ValueError("triggers.target.kind is required to send retrain requests")
    accepted = set(inspect.signature(TARGETS[kind].__init__).parameters) if kind in TARGETS else set()
    options = {k: v for k, v in options.items() if k in accepted or k not in defaults or v != defaults[k]}
    return make_target(kind, **options)
