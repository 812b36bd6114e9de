"""KServe target: patch the InferenceService through the Kubernetes API server.

``PATCH {url}/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}``
with ``Content-Type: application/merge-patch+json`` (a JSON merge patch, RFC 7386: only the
fields named change):

* rollback: ``spec.predictor.canaryTrafficPercent = 0``. KServe tracks the last revision
  rolled out with 100% of the traffic; 0% to the canary sends all traffic back to it.
  Canary rollout exists in KServe's serverless (Knative) deployment mode only.
* disable: the annotation ``serving.kserve.io/stop: "true"``, KServe's documented way to
  stop an InferenceService (its serving resources are removed and it reports Stopped;
  removing the annotation or setting it to "false" resumes it). KServe 0.15 or later.

Both patches also set ``driftline.io/serving-request`` to the request id, so the resource
names the approved request that changed it. A merge patch is idempotent: a re-send after a
lost response leaves the resource as the first one did. The bearer token is the pod's
service-account token, read from ``{service_account_dir}/token`` on every call (projected
tokens rotate), unless ``token`` is given; the API server's CA is ``{service_account_dir}/ca.crt``
unless ``ca_file`` is given. The service account needs ``patch`` on ``inferenceservices``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from monitor.events import ServingRequest
from monitor.serving.base import ServingTarget
from monitor.triggers.base import TriggerCall

__all__ = ["KServeTarget", "API_PATH", "MERGE_PATCH", "STOP_ANNOTATION", "REQUEST_ANNOTATION"]

API_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}"
MERGE_PATCH = "application/merge-patch+json"
STOP_ANNOTATION = "serving.kserve.io/stop"
REQUEST_ANNOTATION = "driftline.io/serving-request"


class KServeTarget(ServingTarget):
    """``service_account_dir``: where the pod's service-account token and CA are mounted."""

    kind = "kserve"

    def __init__(
        self,
        url: str,
        token: str = "",
        headers: Mapping[str, str] | None = None,
        ca_file: str = "",
        service_account_dir: str = "",
        models: Mapping[str, Any] | None = None,
    ):
        super().__init__(url, token, headers, ca_file, models)
        self.service_account_dir = service_account_dir or ""
        if not self.token and not self.service_account_dir:
            raise ValueError("serving.target: kind = 'kserve' needs token or service_account_dir")
        if not self.ca_file and self.service_account_dir and self.url.startswith("https://"):
            ca = Path(self.service_account_dir) / "ca.crt"
            if ca.is_file():
                self.ca_file = str(ca)

    def _bearer(self) -> str:
        if self.token:
            return self.token
        path = Path(self.service_account_dir) / "token"
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OSError(f"cannot read the service-account token {path}: {exc.strerror or exc}") from exc

    def build(self, request: ServingRequest) -> TriggerCall:
        where = self.where(request)
        path = API_PATH.format(namespace=quote(where.namespace, safe=""), name=quote(where.inference_service, safe=""))
        annotations = {REQUEST_ANNOTATION: request.id}
        if request.action == "rollback":
            body: dict = {"metadata": {"annotations": annotations}, "spec": {"predictor": {"canaryTrafficPercent": 0}}}
        elif request.action == "disable":
            body = {"metadata": {"annotations": {**annotations, STOP_ANNOTATION: "true"}}}
        else:
            raise ValueError(f"serving action {request.action!r} is unknown (rollback | disable)")
        return TriggerCall("PATCH", self.url + path, self._headers({"Content-Type": MERGE_PATCH}), body)
