"""Project exceptions for monitor/: one module, so callers catch one family.

Every message names what was wrong and where (file line, key, field, topic/offset).
Add classes here rather than scattering exception types across modules.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DriftlineError",
    "ConfigError",
    "DecodeError",
    "StateError",
    "DeliveryError",
    "AuditTopicError",
]


class DriftlineError(Exception):
    """Base of every Driftline exception."""


class ConfigError(DriftlineError, ValueError):
    """A configuration problem, located by file, line and dotted key.

    ``str(err)`` reads ``config.toml:57: models[0].rules[1].warn: expected a number, got
    "high"``. One error may carry several problems (``errors``), so a user fixes a file in
    one pass; its ``str`` then has one such line per problem, in file order.

    >>> str(ConfigError('expected a number, got "high"', key="models[0].rules[1].warn",
    ...                 line=57, path="config.toml"))
    'config.toml:57: models[0].rules[1].warn: expected a number, got "high"'
    """

    def __init__(
        self,
        message: str,
        key: str | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.key = key
        self.line = line
        self.path = path
        self.errors: list[ConfigError] = [self]
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"

    @classmethod
    def combine(cls, errors: Iterable[ConfigError]) -> ConfigError:
        """One exception for several problems; the first (by line) gives key/line/path."""
        errs = sorted(errors, key=lambda e: (e.line is None, e.line or 0))
        if not errs:
            raise ValueError("ConfigError.combine needs at least one error")
        if len(errs) == 1:
            return errs[0]
        first = errs[0]
        combined = cls(first.message, key=first.key, line=first.line, path=first.path)
        combined.errors = errs
        combined.args = ("\n".join(e._one_line() for e in errs),)
        return combined

    def __str__(self) -> str:
        return str(self.args[0])


class DecodeError(DriftlineError, ValueError):
    """An input record that cannot be decoded; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class StateError(DriftlineError):
    """Persisted state (checkpoint, offsets, outbox) is missing, corrupt or inconsistent."""


class DeliveryError(DriftlineError):
    """A sink or trigger could not deliver; the outbox keeps the item and retries."""


class AuditTopicError(DriftlineError):
    """The Kafka audit topic is misconfigured, unreachable, not permitted (the message names
    the topic, the config or the ACL needed) or holds a bad chain head (partition/offset)."""
