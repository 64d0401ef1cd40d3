"""One small registry for encoders and fusions, in the spirit of timm's ``register_model``.

A registered class carries its config dataclass; ``create`` builds it from that config, so a name in
a YAML file is all a user writes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    config_class: type
    modality: str | None
    description: str


class Registry:
    def __init__(self, kind: str, modules: tuple[str, ...]):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._modules = modules  # imported lazily so registration happens before the first lookup
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def register(self, name: str, *, config: type, modality: str | None = None) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            if name in self._entries and self._entries[name].cls is not cls:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._entries[name].cls}")
            doc = (cls.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, cls, config, modality, doc[0] if doc else "")
            cls.registry_name = name
            return cls

        return decorator

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> Entry:
        self._load()
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")
        return self._entries[name]

    def names(self, modality: str | None = None) -> list[str]:
        self._load()
        return sorted(n for n, e in self._entries.items() if modality is None or e.modality == modality)

    def entries(self) -> list[Entry]:
        self._load()
        return [self._entries[n] for n in self.names()]

    def create(self, config: Any, **kwargs: Any) -> Any:
        return self.get(config.name).cls(config, **kwargs)


ENCODERS = Registry(
    "encoder",
    ("mmemo.models.encoders.text", "mmemo.models.encoders.audio", "mmemo.models.encoders.opensmile",
     "mmemo.models.encoders.vision"),
)
FUSIONS = Registry("fusion", ("mmemo.models.fusion",))

register_encoder = ENCODERS.register
register_fusion = FUSIONS.register


def create_encoder(config: Any, **kwargs: Any) -> Any:
    return ENCODERS.create(config, **kwargs)


def create_fusion(config: Any, **kwargs: Any) -> Any:
    return FUSIONS.create(config, **kwargs)


def list_models() -> dict[str, list[Entry]]:
    return {"encoders": ENCODERS.entries(), "fusions": FUSIONS.entries()}
