"""Loading each model's reference profile named in the config (or none: warm-up)."""

from __future__ import annotations

from pathlib import Path

from detectors.reference import ReferenceProfile
from monitor.errors import ConfigError

__all__ = ["load_profiles"]


def load_profiles(config, base: Path | None = None) -> dict[str, ReferenceProfile | None]:
    """Profiles by model name; a relative path is taken from the config file's directory."""
    out: dict[str, ReferenceProfile | None] = {}
    root = base or Path(getattr(config, "source_dir", ".") or ".")
    for i, m in enumerate(config.models):
        if not m.reference:
            out[m.name] = None
            continue
        path = Path(m.reference)
        if not path.is_absolute():
            path = root / path
        try:
            out[m.name] = ReferenceProfile.load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"models[{i}].reference: cannot load reference profile {str(path)!r}: {exc}") from exc
    return out
