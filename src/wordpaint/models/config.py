"""The shared part of every model config: a dataclass that round-trips through ``config.json``."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, fields

import torch


def init_device(empty: bool):
    """Context for building a model: parameters on the meta device when ``empty`` (no random
    initialisation, because weights are loaded next), else the default device."""
    return torch.device("meta") if empty else contextlib.nullcontext()


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's parameters (CPU for a module without any)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_number(name: str, value: object, what: str, in_range) -> None:
    """Raise ``ValueError("NAME must be WHAT, got VALUE")`` unless ``value`` is a real number (not a
    bool) for which ``in_range(value)`` holds: a config field's range check, one message everywhere."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not in_range(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")


class ConfigMixin:
    """``to_dict`` (tuples as lists, JSON-ready) and ``from_dict`` (lists back to tuples; unknown
    keys are an error naming the accepted ones). Mixed into each model's config dataclass."""

    family: str = "model"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"family", "wordpaint_version"})
        if unknown:
            raise ValueError(f"unknown {cls.family} config keys: {unknown}; expected some of: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
