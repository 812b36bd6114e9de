"""Loopback fakes of the serving control APIs, strict about the requests the real ones accept.

* ``kserve``: a Kubernetes API server holding InferenceServices. Only
  ``PATCH /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}`` with
  ``Content-Type: application/merge-patch+json`` and the expected bearer token is accepted
  (415 for another patch type, 401 without the token, 404 for an unknown path or object,
  405 for another method); the body is applied as an RFC 7386 merge patch, written here
  independently of the code under test, and the object is returned.
* ``mlflow``: an MLflow tracking server's alias endpoints. ``POST`` and ``DELETE
  /api/2.0/mlflow/registered-models/alias`` with a JSON body (``Content-Type:
  application/json``, as MLflow's handlers require); the set needs name, alias and a
  version that exists; deleting a missing alias is 404 RESOURCE_DOES_NOT_EXIST.
* ``recorder``: any path, any method, records and answers 200.

Each fake records every request (method, path, lower-cased headers, parsed JSON body) and
answers the next scripted status from ``statuses`` first when one is queued.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

KSERVE_TOKEN = "sa-token-1"
_ISVC_PATH = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices/([^/]+)$")
_ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


def merge_patch(target, patch):
    """RFC 7386 section 2, as pseudo-code there: null deletes, objects merge, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class Fake:
    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.url = ""
        # kserve state
        self.isvcs: dict[tuple[str, str], dict] = {}
        self.token = KSERVE_TOKEN
        # mlflow state: model -> {"versions": set, "aliases": {alias: version}}
        self.models: dict[str, dict] = {}

    def answer(self, method: str, path: str, headers: dict, body) -> tuple[int, dict]:
        return 200, {"ok": True}


class KServeFake(Fake):
    def answer(self, method, path, headers, body):
        m = _ISVC_PATH.match(path)
        if m is None:
            return 404, {"kind": "Status", "reason": "NotFound", "message": f"no route {path}"}
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"kind": "Status", "reason": "Unauthorized"}
        if method != "PATCH":
            return 405, {"kind": "Status", "reason": "MethodNotAllowed"}
        if headers.get("content-type") != "application/merge-patch+json":
            return 415, {"kind": "Status", "reason": "UnsupportedMediaType",
                         "message": f"the body of the request was in an unknown format - accepted media types include: "
                                    f"application/json-patch+json, application/merge-patch+json, got {headers.get('content-type')}"}
        key = (m.group(1), m.group(2))
        if key not in self.isvcs:
            return 404, {"kind": "Status", "reason": "NotFound", "message": f"inferenceservices {key[1]!r} not found"}
        self.isvcs[key] = merge_patch(self.isvcs[key], body)
        return 200, self.isvcs[key]


class MlflowFake(Fake):
    def answer(self, method, path, headers, body):
        if path != _ALIAS_PATH:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": path}
        if headers.get("content-type") != "application/json":
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Bad content type"}
        if not isinstance(body, dict) or not body.get("name") or not body.get("alias"):
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Missing value for required parameter"}
        model = self.models.get(body["name"])
        if model is None:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Registered Model {body['name']} not found"}
        if method == "POST":
            version = body.get("version")
            if not isinstance(version, str) or version not in model["versions"]:
                return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"version {version!r} not found"}
            model["aliases"][body["alias"]] = version
            return 200, {}
        if method == "DELETE":
            if body["alias"] not in model["aliases"]:
                return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"alias {body['alias']} not found"}
            del model["aliases"][body["alias"]]
            return 200, {}
        return 405, {"error_code": "BAD_REQUEST"}


def _serve(fake: Fake):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _handle(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            with fake.lock:
                fake.requests.append({"method": self.command, "path": self.path, "headers": headers, "json": body})
                if fake.statuses:
                    status, answer = fake.statuses.pop(0), {"message": "scripted"}
                else:
                    status, answer = fake.answer(self.command, self.path, headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


@pytest.fixture
def kserve():
    fake = KServeFake()
    fake.isvcs[("ml", "credit-risk")] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "credit-risk", "namespace": "ml", "annotations": {"team": "risk"}},
        "spec": {"predictor": {"canaryTrafficPercent": 10,
                               "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://m/v8"}}},
    }
    server = _serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def mlflow():
    fake = MlflowFake()
    fake.models["credit-risk"] = {"versions": {"6", "7", "8"}, "aliases": {"champion": "8"}}
    server = _serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def recorder():
    fake = Fake()
    server = _serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def sa_dir(tmp_path):
    """A service-account mount as Kubernetes projects it: token (and ca.crt, not used on http)."""
    d = tmp_path / "serviceaccount"
    d.mkdir()
    (d / "token").write_text(KSERVE_TOKEN + "\n")
    return d
