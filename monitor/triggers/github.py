"""GitHub target: a ``repository_dispatch`` event that starts a workflow (``on: repository_dispatch``).

``POST {url}/repos/{repository}/dispatches`` (url defaults to https://api.github.com;
tests and GitHub Enterprise override it) with ``event_type`` and ``client_payload``.
GitHub accepts at most 10 top-level keys in ``client_payload``; ours has 9. Success is 204.
The token needs the repository's contents write permission.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from monitor.events import RetrainRequest
from monitor.triggers.base import TriggerCall, TriggerTarget, _need, retrain_payload

__all__ = ["GitHubTarget"]

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class GitHubTarget(TriggerTarget):
    """``repository``: ``owner/name``; ``event_type``: the workflow's ``types`` filter."""

    kind = "github"

    def __init__(
        self,
        repository: str,
        event_type: str = "driftline-retrain",
        url: str = "https://api.github.com",
        token: str = "",
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(url or "https://api.github.com", token, headers)
        repository = _need(self.kind, "repository", repository)
        if not _REPO.match(repository):
            raise ValueError(f"triggers.target.repository must be 'owner/name', got {repository!r}")
        self.repository = repository
        self.event_type = _need(self.kind, "event_type", event_type)
        if len(self.event_type) > 100:
            raise ValueError(f"triggers.target.event_type is longer than GitHub's 100 characters: {event_type!r}")

    def build(self, request: RetrainRequest) -> TriggerCall:
        payload = retrain_payload(request)
        assert len(payload) <= 10  # GitHub's limit on client_payload keys
        headers = self._headers(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        )
        body = {"event_type": self.event_type, "client_payload": payload}
        return TriggerCall("POST", f"{self.url}/repos/{self.repository}/dispatches", headers, body)
