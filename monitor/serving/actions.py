"""Rule actions ``rollback`` and ``disable``: firing alerts become gated serving requests.

:meth:`ServingActions.propose` runs inside the pipeline's checkpoint transaction, next to
the retrain proposals, so a request exists exactly when the alert that caused it is
durable. Each request passes :meth:`Oversight.propose_serving`'s guardrails (override, an
open request, ``cooldown_seconds``), then waits for a person's approval when
``require_approval`` (through the same API and CLI as retrains: ``driftline approve ID``),
and is then sent (or, with ``dry_run``, recorded unsent) by the :class:`ServingSender`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from monitor.events import SERVING_ACTIONS, AlertEvent, ServingRequest
from monitor.oversight import Oversight
from monitor.serving.sender import ServingSender

__all__ = ["ServingActions"]


class ServingActions:
    """Configuration arguments equal the ``[serving]`` keys (the target and ``dry_run`` live
    in the ``sender``; None when no target is configured: then no rule may ask for one)."""

    def __init__(
        self,
        oversight: Oversight,
        *,
        cooldown_seconds: float = 3600.0,
        require_approval: bool = True,
        sender: ServingSender | None = None,
    ):
        if not cooldown_seconds >= 0:
            raise ValueError(f"serving.cooldown_seconds must be >= 0, got {cooldown_seconds!r}")
        if not isinstance(require_approval, bool):
            raise ValueError(f"serving.require_approval must be true or false, got {require_approval!r}")
        self.oversight = oversight
        self.cooldown_seconds = float(cooldown_seconds)
        self.require_approval = require_approval
        self.sender = sender

    @classmethod
    def from_config(cls, config: Any, oversight: Oversight, **sender_kwargs: Any) -> ServingActions:
        s = config.serving
        return cls(
            oversight,
            cooldown_seconds=s.cooldown_seconds,
            require_approval=s.require_approval,
            sender=ServingSender.from_config(config, oversight, **sender_kwargs),
        )

    def propose(self, conn: sqlite3.Connection, transitions: Iterable[AlertEvent]) -> list[ServingRequest]:
        """Requests for the firing transitions whose rule has a serving action (the
        config allows one per rule). Decision time is the alert's window end, as for
        retrains, so a replay decides the same way."""
        from monitor.replay import transition_record

        made = []
        for t in transitions:
            action = next((a for a in t.actions if a in SERVING_ACTIONS), None)
            if t.state != "firing" or action is None:
                continue
            req = self.oversight.propose_serving(
                conn, action, t.model, f"{t.rule}: {t.metric} {t.scope} = {t.value}",
                (t.window_start, t.window_end), {"alert": transition_record(t)}, t.window_end,
                cooldown_seconds=self.cooldown_seconds, require_approval=self.require_approval,
                model_version=t.model_version,
            )
            if req is not None:
                made.append(req)
        return made

    def send_due(self, now: float | None = None) -> dict[str, int]:
        """Send (or dry-run) every due approved request; {} without a target."""
        return {} if self.sender is None else self.sender.send_due(now)

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
