"""Argo Workflows target: submit a Workflow from a WorkflowTemplate through the Argo Server.

``POST {url}/api/v1/workflows/{namespace}/submit`` with ``resourceKind: WorkflowTemplate``.
Each field becomes a template parameter (``submitOptions.parameters`` are ``name=value``
strings; evidence is JSON text), and the workflow is named after the request, so a re-send
is refused by Kubernetes as already existing (409), which counts as success.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from monitor.events import RetrainRequest
from monitor.triggers.base import TriggerCall, TriggerTarget, _need, retrain_payload, run_id

__all__ = ["ArgoTarget"]


def _param(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


class ArgoTarget(TriggerTarget):
    """``workflow_template``: the WorkflowTemplate name; ``namespace``: where it lives."""

    kind = "argo"
    already_exists = frozenset({409})

    def __init__(
        self,
        url: str,
        workflow_template: str,
        namespace: str = "default",
        token: str = "",
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(url, token, headers)
        self.workflow_template = _need(self.kind, "workflow_template", workflow_template)
        self.namespace = _need(self.kind, "namespace", namespace)

    def build(self, request: RetrainRequest) -> TriggerCall:
        params = [f"{k}={_param(v)}" for k, v in retrain_payload(request).items()]
        body = {
            "namespace": self.namespace,
            "resourceKind": "WorkflowTemplate",
            "resourceName": self.workflow_template,
            "submitOptions": {
                "name": run_id(request),
                # The request id is hex, a valid label value; model names may not be.
                "labels": f"driftline.io/retrain-request={request.id}",
                "parameters": params,
            },
        }
        return TriggerCall("POST", f"{self.url}/api/v1/workflows/{self.namespace}/submit", self._headers(), body)
