"""Sends approved retrain requests to the configured target, with retries, and records
every attempt (status and a response excerpt) through Oversight into the audit log.

Run :meth:`RetrainSender.send_due` from the scheduler (every few seconds) and, for a
prompt send, right after an approval. Attempts live in the state database, so a target
that is down (even across restarts) only delays the run. Backoff is the outbox's full-jitter
formula; a ``Retry-After`` from the target overrides it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from monitor.outbox import backoff_delay
from monitor.oversight import ConflictError, Oversight
from monitor.sinks.base import make_http_client
from monitor.triggers.base import TriggerResult, TriggerTarget

__all__ = ["RetrainSender"]

log = logging.getLogger("driftline.triggers")


class RetrainSender:
    """``max_attempts`` attempts per request before it is marked failed (0: retry forever,
    as ``delivery.max_attempts``); a permanent failure (4xx other than 429) fails at once."""

    def __init__(
        self,
        oversight: Oversight,
        target: TriggerTarget,
        *,
        max_attempts: int = 8,
        initial_backoff_seconds: float = 5.0,
        max_backoff_seconds: float = 600.0,
        timeout_seconds: float = 10.0,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not (isinstance(max_attempts, int) and max_attempts >= 0):
            raise ValueError(f"delivery.max_attempts must be an integer >= 0 (0 = forever), got {max_attempts!r}")
        if not 0 < initial_backoff_seconds <= max_backoff_seconds:
            raise ValueError(
                "need 0 < initial_backoff_seconds <= max_backoff_seconds, got "
                f"{initial_backoff_seconds!r} and {max_backoff_seconds!r}"
            )
        self.oversight = oversight
        self.target = target
        self.max_attempts = max_attempts
        self.initial_backoff_seconds = initial_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.client = client if client is not None else make_http_client(timeout_seconds)
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self._lock = threading.Lock()

    #: Request kinds this sender sends (the oversight table holds every gated action).
    kinds: tuple[str, ...] = ("retrain",)
    #: Outcomes :meth:`send_due` counts.
    outcomes: tuple[str, ...] = ("sent", "retry", "failed")

    def send_due(self, now: float | None = None) -> dict[str, int]:
        """Send every due approved request once. Returns counts by outcome."""
        counts = dict.fromkeys(self.outcomes, 0)
        with self._lock:  # one pass at a time: two would send the same request twice
            now = self.clock() if now is None else now
            for request, attempts in self.oversight.due_retrains(now, kinds=self.kinds):
                outcome = self._attempt(request, attempts, now)
                if outcome is not None:
                    counts[outcome] += 1
        return counts

    def _attempt(self, request: Any, attempts: int, now: float) -> str | None:
        """Send one request once and record the outcome; None when it changed meanwhile."""
        result = self.target.send(request, self.client)
        return self._record(request, attempts, result, now)

    def _record(self, request: Any, attempts: int, result: TriggerResult, now: float,
                call: dict | None = None) -> str | None:
        out = result.outcome
        attempt = attempts + 1
        if out.ok:
            outcome, next_at = "sent", None
        elif out.retryable and (self.max_attempts == 0 or attempt < self.max_attempts):
            wait = backoff_delay(attempt, self.initial_backoff_seconds, self.max_backoff_seconds, self.rng)
            if out.retry_after is not None:
                wait = max(wait, out.retry_after)
            outcome, next_at = "retry", now + wait
        else:
            outcome, next_at = "failed", None
        try:
            self.oversight.record_attempt(
                request.id,
                outcome=outcome,
                target=self.target.kind,
                status_code=out.status_code,
                response_excerpt=result.response_excerpt,
                error=out.error,
                next_attempt_at=next_at,
                now=now,
                call=call,
            )
        except ConflictError:
            # Rejected or changed while we were sending: nothing to record against.
            log.warning("%s request %s changed state during send", self.kinds[0], request.id)
            return None
        if outcome != "sent":
            log.warning("%s request %s to %s: %s (%s)", self.kinds[0], request.id, self.target.kind, outcome, out.error)
        return outcome

    def close(self) -> None:
        self.client.close()

    @classmethod
    def from_config(cls, config: Any, oversight: Oversight, **kwargs: Any) -> RetrainSender | None:
        """The sender for ``[triggers.target]`` with ``[delivery]``'s retry settings; None
        when ``triggers.target.kind`` is empty (requests are recorded, not sent)."""
        from monitor.triggers import target_from_config

        if not config.triggers.target.kind:
            return None
        d = config.delivery
        options = {
            "max_attempts": d.max_attempts,
            "initial_backoff_seconds": d.backoff_initial_seconds,
            "max_backoff_seconds": d.backoff_max_seconds,
            "timeout_seconds": d.timeout_seconds,
            **kwargs,
        }
        return cls(oversight, target_from_config(config.triggers.target), **options)
