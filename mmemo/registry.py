"""Registries of the pluggable parts, in the spirit of timm's ``register_model``: encoders, fusions, dataset
readers and loss terms.

A registered part carries its config dataclass, so a name in a YAML file is all a user writes, and the
config's own fields are checked against that class. Parts register themselves when their module is
imported; importing ``mmemo`` imports every built-in one, so the registries are full before any config is
read. Adding a part is one file with a decorator (and, for a built-in, one import line in its package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmemo.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any  # the class (encoders, fusions, loss terms) or function (readers) that the name builds
    config_class: type
    modality: str | None
    description: str

    @property
    def cls(self) -> Any:
        return self.obj


class Registry:
    """Names -> parts of one kind; ``key`` is the config field that selects a part (``name``, or ``source``
    for readers)."""

    def __init__(self, kind: str, key: str = "name"):
        self.kind = kind
        self.key = key
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, config: type, modality: str | None = None) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._entries[name].obj}")
            summary = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())  # the first paragraph
            self._entries[name] = Entry(name, obj, config, modality, summary)
            if isinstance(obj, type):
                obj.registry_name = name
            return obj

        return decorator

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")
        return self._entries[name]

    def names(self, modality: str | None = None) -> list[str]:
        return sorted(n for n, e in self._entries.items() if modality is None or e.modality == modality)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def config_class(self, name: Any, where: str) -> type:
        """The config dataclass of the part named ``name`` (the value of ``<where>.<key>``), or a ConfigError
        that lists what is registered."""
        allowed = ", ".join(self.names())
        if not name:
            raise ConfigError(f"{where}.{self.key}: missing; allowed: {allowed}")
        if name not in self._entries:
            raise ConfigError(f"{where}.{self.key}: unknown {self.kind} '{name}'; allowed: {allowed}")
        return self._entries[name].config_class

    def create(self, config: Any, **kwargs: Any) -> Any:
        return self.get(getattr(config, self.key)).obj(config, **kwargs)


ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")
READERS = Registry("reader", key="source")
LOSS_TERMS = Registry("loss term")

register_encoder = ENCODERS.register
register_fusion = FUSIONS.register
register_reader = READERS.register
register_loss_term = LOSS_TERMS.register


def create_encoder(config: Any, **kwargs: Any) -> Any:
    return ENCODERS.create(config, **kwargs)


def create_fusion(config: Any, **kwargs: Any) -> Any:
    return FUSIONS.create(config, **kwargs)


def list_models() -> dict[str, list[Entry]]:
    return {"encoders": ENCODERS.entries(), "fusions": FUSIONS.entries()}
