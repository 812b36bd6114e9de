"""Sends approved rollback / disable requests, or in a dry run records them unsent.

The retrain sender's loop (:class:`~monitor.triggers.sender.RetrainSender`: due requests
from the state database, full-jitter backoff, ``Retry-After``, give up after
``max_attempts``) over the serving kinds. Each attempt's audit entry holds the exact call
(method, URL, headers with secrets masked, body). With ``dry_run`` the call is built and
recorded as ``serving.dry_run`` and the request ends in status ``dry_run``: nothing is sent.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from monitor.events import SERVING_ACTIONS, ServingRequest
from monitor.oversight import ConflictError, Oversight
from monitor.serving.base import ServingTarget, describe_call
from monitor.sinks.base import DeliveryOutcome, make_http_client
from monitor.triggers.base import TriggerResult
from monitor.triggers.sender import RetrainSender

__all__ = ["ServingSender"]

log = logging.getLogger("driftline.serving")


class ServingSender(RetrainSender):
    """``dry_run``: record the request each approved action would send, send nothing."""

    kinds = tuple(SERVING_ACTIONS)
    outcomes = ("sent", "retry", "failed", "dry_run")

    def __init__(self, oversight: Oversight, target: ServingTarget, *, dry_run: bool = True, **kwargs: Any):
        if not isinstance(dry_run, bool):
            raise ValueError(f"serving.dry_run must be true or false, got {dry_run!r}")
        if "client" not in kwargs and target.ca_file:
            kwargs["client"] = make_http_client(
                kwargs.get("timeout_seconds", 10.0), verify=ssl.create_default_context(cafile=target.ca_file)
            )
        super().__init__(oversight, target, **kwargs)
        self.dry_run = dry_run

    def _attempt(self, request: ServingRequest, attempts: int, now: float) -> str | None:
        try:
            call = self.target.build(request)
        except OSError as exc:  # an unreadable token file may be a mount not yet there: retry
            return self._record(request, attempts, TriggerResult(DeliveryOutcome.retry(str(exc))), now)
        except ValueError as exc:  # the request cannot be expressed for this target: final
            return self._record(request, attempts, TriggerResult(DeliveryOutcome.permanent(str(exc))), now)
        described = describe_call(call)
        if self.dry_run:
            try:
                self.oversight.record_attempt(
                    request.id, outcome="dry_run", target=self.target.kind, status_code=None,
                    response_excerpt="", error=None, next_attempt_at=None, now=now, call=described,
                )
            except ConflictError:
                log.warning("%s request %s changed state during the dry run", request.action, request.id)
                return None
            log.warning("DRY RUN %s of %s: would send %s %s", request.action, request.model, call.method, call.url)
            return "dry_run"
        result = self.target.send_call(call, self.client)
        return self._record(request, attempts, result, now, call=described)

    @classmethod
    def from_config(cls, config: Any, oversight: Oversight, **kwargs: Any) -> ServingSender | None:
        """The sender for ``[serving.target]`` with ``[delivery]``'s retry settings; None
        when ``serving.target.kind`` is empty."""
        from monitor.serving import target_from_config

        s = config.serving
        if not s.target.kind:
            return None
        d = config.delivery
        options = {
            "dry_run": s.dry_run,
            "max_attempts": d.max_attempts,
            "initial_backoff_seconds": d.backoff_initial_seconds,
            "max_backoff_seconds": d.backoff_max_seconds,
            "timeout_seconds": d.timeout_seconds,
            **kwargs,
        }
        return cls(oversight, target_from_config(config), **options)
