"""Airflow target: trigger a DAG run through the stable REST API (Airflow 2).

``POST {url}/api/v1/dags/{dag_id}/dagRuns`` with ``dag_run_id`` derived from the request id,
so a re-send after a lost response hits Airflow's uniqueness check (409) instead of
starting a second run; 409 therefore counts as success. The DAG reads everything from
``dag_run.conf``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from monitor.events import RetrainRequest
from monitor.triggers.base import TriggerCall, TriggerTarget, _need, retrain_payload, run_id

__all__ = ["AirflowTarget"]


class AirflowTarget(TriggerTarget):
    """``dag_id``: the DAG to run. ``conf`` holds :func:`retrain_payload`'s fields."""

    kind = "airflow"
    already_exists = frozenset({409})

    def __init__(self, url: str, dag_id: str, token: str = "", headers: Mapping[str, str] | None = None):
        super().__init__(url, token, headers)
        self.dag_id = _need(self.kind, "dag_id", dag_id)

    def build(self, request: RetrainRequest) -> TriggerCall:
        body = {"dag_run_id": run_id(request), "conf": retrain_payload(request)}
        return TriggerCall(
            "POST", f"{self.url}/api/v1/dags/{quote(self.dag_id, safe='')}/dagRuns", self._headers(), body
        )
