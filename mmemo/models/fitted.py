"""Processors' fitted state (per-speaker statistics and enrolled speakers) as a safetensors file: saved in
the model folder (``processors.safetensors``), so that a model trained with per-speaker normalisation
predicts after loading, or on its own (an enrolment file) for speakers enrolled after training.

Tensors are named ``<modality>.<name>``; what is not a tensor (speaker names, the encoder's name) is JSON in
the file's metadata. Nothing is ever unpickled. A model folder saved before this file existed has no
fitted state: it loads with no enrolments.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from mmemo.errors import CheckpointError
from mmemo.models.encoders.base import FittedTensors, Processor

FITTED_NAME = "processors.safetensors"
ENROLLMENTS_NAME = "enrollments.safetensors"
FORMAT_VERSION = "1"


def fitted_states(processors: Mapping[str, Processor], speakers: Iterable[str] | None = None) -> dict[str, FittedTensors]:
    """Each learning processor's state (only ``speakers``' statistics when given), by modality."""
    wanted = None if speakers is None else list(speakers)
    states = {}
    for modality, processor in processors.items():
        state = processor.fitted_tensors(wanted) if processor.learns else None
        if state is not None:
            states[modality] = state
    return states


def write_fitted(states: Mapping[str, FittedTensors], path: str | Path, content: str = "processors") -> Path:
    """Write the states atomically (a temporary file renamed into place); ``content`` says what the file is."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{m}.{k}": t.contiguous() for m, state in states.items() for k, t in state.tensors.items()}
    meta = {"library": "mmemo", "format": "pt", "content": content, "version": FORMAT_VERSION,
            "processors": json.dumps({m: state.meta for m, state in states.items()})}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_fitted(path: str | Path) -> dict[str, FittedTensors]:
    """The states in a file written by ``write_fitted``; a damaged or foreign file is a ``CheckpointError``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); the file is damaged") from None
    if meta.get("library") != "mmemo" or "processors" not in meta:
        raise CheckpointError(f"{path}: not an mmemo processor-state or enrolment file")
    try:
        described = json.loads(meta["processors"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({exc})") from None
    states = {m: FittedTensors({}, dict(info)) for m, info in described.items()}
    for key, tensor in tensors.items():
        modality, _, name = key.partition(".")
        if modality not in states:
            raise CheckpointError(f"{path}: tensor {key} belongs to no described processor")
        states[modality].tensors[name] = tensor
    return states


def apply_fitted(processors: Mapping[str, Processor], states: Mapping[str, FittedTensors], source: str | Path) -> None:
    """Load each state into its modality's processor (adding or replacing speakers)."""
    for modality, state in states.items():
        if modality not in processors:
            raise CheckpointError(f"{source}: holds {modality} statistics, and this model reads no {modality}")
        processors[modality].load_fitted_tensors(state, f"{source} ({modality})")


def load_saved_fitted(directory: str | Path, processors: Mapping[str, Processor]) -> bool:
    """The model folder's fitted state into ``processors``; False when the folder has none (saved before
    fitted state was kept, or by a model that learns nothing from its inputs)."""
    path = Path(directory) / FITTED_NAME
    if not path.is_file():
        return False
    apply_fitted(processors, read_fitted(path), path)
    return True
