"""Kubeflow Pipelines v2 target: create a run of a pipeline version.

``POST {url}/apis/v2beta1/runs`` with ``pipeline_version_reference`` and
``runtime_config.parameters``. The pipeline must declare the parameters it receives
(request_id, model, model_version, reason, window_start, window_end, approved_by,
decision_reason, evidence as JSON text). KFP has no client-chosen run id, so a re-send
after a lost response can start a second run; the ``request_id`` parameter and the
display name let the pipeline (or a person) recognise the duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from monitor.events import RetrainRequest
from monitor.triggers.base import TriggerCall, TriggerTarget, _need, retrain_payload, run_id

__all__ = ["KubeflowTarget"]


class KubeflowTarget(TriggerTarget):
    """``pipeline_id`` and ``pipeline_version_id`` name the pipeline; ``experiment_id`` is
    optional (KFP uses the default experiment without it)."""

    kind = "kubeflow"

    def __init__(
        self,
        url: str,
        pipeline_id: str,
        pipeline_version_id: str,
        experiment_id: str = "",
        token: str = "",
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(url, token, headers)
        self.pipeline_id = _need(self.kind, "pipeline_id", pipeline_id)
        self.pipeline_version_id = _need(self.kind, "pipeline_version_id", pipeline_version_id)
        self.experiment_id = experiment_id or ""

    def build(self, request: RetrainRequest) -> TriggerCall:
        payload = retrain_payload(request)
        params = {
            k: (json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, dict | list) else ("" if v is None else v))
            for k, v in payload.items()
        }
        body: dict = {
            "display_name": run_id(request),
            "description": f"{request.model}: {request.reason}"[:1000],
            "pipeline_version_reference": {
                "pipeline_id": self.pipeline_id,
                "pipeline_version_id": self.pipeline_version_id,
            },
            "runtime_config": {"parameters": params},
        }
        if self.experiment_id:
            body["experiment_id"] = self.experiment_id
        return TriggerCall("POST", f"{self.url}/apis/v2beta1/runs", self._headers(), body)
