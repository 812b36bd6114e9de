"""MLflow model-registry target: move or delete the alias serving loads the model by.

* rollback: ``POST {url}/api/2.0/mlflow/registered-models/alias`` with
  ``{"name": registered_model, "alias": alias, "version": rollback_version}`` points the
  alias (e.g. ``champion``) back at a known-good version; a server that loads
  ``models:/{name}@{alias}`` serves that version at its next load.
* disable: ``DELETE {url}/api/2.0/mlflow/registered-models/alias`` with
  ``{"name": registered_model, "alias": alias}`` in the JSON body (MLflow reads non-GET
  parameters from the body): the alias no longer resolves, so nothing new loads the model.

Both are idempotent: setting an alias twice leaves it where the first set it, and a second
delete gets 404 (RESOURCE_DOES_NOT_EXIST), which counts as done because the alias is gone.
``token`` is sent as a bearer token (Databricks, an authenticating proxy); for MLflow's
basic-auth app set ``headers = { Authorization = "Basic ${MLFLOW_BASIC}" }``.
"""

from __future__ import annotations

import httpx

from monitor.events import ServingRequest
from monitor.serving.base import ServingTarget
from monitor.sinks.base import DeliveryOutcome
from monitor.triggers.base import TriggerCall

__all__ = ["MlflowTarget", "ALIAS_PATH"]

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


class MlflowTarget(ServingTarget):
    """The registered model, alias and rollback version come from ``[models.serving]``."""

    kind = "mlflow"

    def build(self, request: ServingRequest) -> TriggerCall:
        where = self.where(request)
        if request.action == "rollback":
            if not where.rollback_version:
                raise ValueError(
                    f"models.serving.rollback_version is not set for model {request.model!r}: "
                    f"no version to point alias {where.alias!r} back to"
                )
            body = {"name": where.registered_model, "alias": where.alias, "version": where.rollback_version}
            return TriggerCall("POST", self.url + ALIAS_PATH, self._headers(), body)
        if request.action == "disable":
            body = {"name": where.registered_model, "alias": where.alias}
            return TriggerCall("DELETE", self.url + ALIAS_PATH, self._headers(), body)
        raise ValueError(f"serving action {request.action!r} is unknown (rollback | disable)")

    def classify(self, response: httpx.Response) -> DeliveryOutcome:
        if response.request.method == "DELETE" and response.status_code == 404:
            return DeliveryOutcome.success(404)  # the alias is already gone: the goal state
        return super().classify(response)
