"""Serving control: rollback / disable a model behind the approval gate. One module per
target kind, a closed registry of kinds, the sender and the rule-action glue."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from monitor.serving.base import ModelServing, ServingTarget, describe_call
from monitor.serving.http import HttpServingTarget
from monitor.serving.kserve import KServeTarget
from monitor.serving.mlflow import MlflowTarget

__all__ = [
    "TARGETS",
    "HttpServingTarget",
    "KServeTarget",
    "MlflowTarget",
    "ModelServing",
    "ServingTarget",
    "describe_call",
    "make_target",
    "target_from_config",
]

TARGETS: dict[str, type[ServingTarget]] = {
    "http": HttpServingTarget,
    "kserve": KServeTarget,
    "mlflow": MlflowTarget,
}


def make_target(kind: str, **options: Any) -> ServingTarget:
    """Build a target from ``[serving.target]`` keys (plus ``models``); a non-empty key the
    kind does not take is an error (a likely typo), empty ones are ignored."""
    try:
        cls = TARGETS[kind]
    except KeyError:
        raise ValueError(f"serving.target.kind {kind!r} is unknown; available: {sorted(TARGETS)}") from None
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    args: dict[str, Any] = {}
    for key, value in options.items():
        if key == "kind":
            continue
        if key in accepted:
            args[key] = value
        elif value not in (None, "", {}, []):
            raise ValueError(f"serving.target.{key} is not used by kind = {kind!r} (it takes {sorted(accepted)})")
    return cls(**args)


def target_from_config(config: Any) -> ServingTarget:
    """The target of a loaded config: ``[serving.target]`` and every model's ``[models.serving]``.
    Keys left at their defaults (``method``) go only to kinds that take them."""
    t = config.serving.target
    if not t.kind:
        raise ValueError("serving.target.kind is required to send rollback / disable requests")
    options = msgspec.structs.asdict(t)
    defaults = msgspec.structs.asdict(type(t)())
    accepted = set(inspect.signature(TARGETS[t.kind].__init__).parameters) if t.kind in TARGETS else set()
    options = {k: v for k, v in options.items() if k in accepted or k not in defaults or v != defaults[k]}
    options["models"] = {m.name: m.serving for m in config.models}
    return make_target(options.pop("kind"), **options)
