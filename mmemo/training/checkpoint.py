"""Training checkpoints without pickles: every state is tensors in safetensors plus plain JSON, and every file's
SHA-256 is in a manifest that is checked before anything is read.

Accelerate's ``save_state`` pickles the optimiser, the scheduler, the RNG states and custom objects, and
``load_state`` unpickles them: a crafted file in a run folder would run its code on ``--resume``. So mmemo
writes its checkpoints itself:

    checkpoints/last/
        checkpoint.json            format, world size, and the SHA-256 and size of every file below
        model.safetensors          the model's weights (safetensors.torch.save_model: shared tensors handled)
        <name>.json                a state tree (optimiser, scheduler, trainer, callbacks, rng_<rank>) as JSON,
        <name>.safetensors         ... its tensors by reference (absent when it has none)

A **state tree** is what ``state_dict()`` methods return: dicts, lists, tuples, ints, floats, strings,
booleans, None, tensors and NumPy arrays (NumPy's RNG state). ``flatten`` turns it into JSON with
``{"$tensor": key}`` placeholders; ``unflatten`` rebuilds it from JSON and the safetensors file alone, so
loading constructs nothing but those types. Anything else is refused when saving, naming where it is.

Resume is exact or refused: a missing file, a size or digest that differs from the manifest, a checkpoint
from Accelerate's pickled format or from another number of processes is an error that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmemo.errors import CheckpointError

FORMAT = "mmemo-checkpoint/1"
MANIFEST_NAME = "checkpoint.json"
MODEL_NAME = "model.safetensors"
PICKLED_SUFFIXES = (".pkl", ".bin", ".pt", ".pth")  # what Accelerate's save_state wrote


# --------------------------------------------------------------------------------------------------
# State trees <-> JSON + tensors
# --------------------------------------------------------------------------------------------------


def flatten(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(skeleton, tensors)``: a JSON-able skeleton in which each tensor is ``{"$tensor": key}``."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = node.detach().to("cpu").contiguous().clone()
            return {"$tensor": key}
        if isinstance(node, np.ndarray):
            key = str(len(tensors))
            tensors[key] = torch.from_numpy(np.ascontiguousarray(node).view(np.uint8).reshape(-1).copy())
            return {"$ndarray": key, "dtype": node.dtype.str, "shape": list(node.shape)}
        if isinstance(node, np.generic):
            return walk(node.item(), where)
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, tuple):
            return {"$tuple": [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in node):
                return {k: walk(v, f"{where}.{k}") for k, v in node.items()}
            return {"$items": [[walk(k, f"{where} key"), walk(v, f"{where}[{k!r}]")] for k, v in node.items()]}
        raise CheckpointError(f"checkpoint state {where or 'root'}: cannot store a {type(node).__name__} "
                              "(only tensors, arrays, numbers, strings, lists, tuples and dicts)")

    return walk(tree, ""), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor], where: str = "") -> Any:
    """The state tree ``flatten`` was given, rebuilt from plain types only."""
    if isinstance(skeleton, list):
        return [unflatten(v, tensors, where) for v in skeleton]
    if isinstance(skeleton, dict):
        if "$tensor" in skeleton:
            return _tensor(tensors, skeleton["$tensor"], where)
        if "$ndarray" in skeleton:
            raw = _tensor(tensors, skeleton["$ndarray"], where).numpy()
            return raw.view(np.dtype(skeleton["dtype"])).reshape(skeleton["shape"]).copy()
        if "$tuple" in skeleton:
            return tuple(unflatten(v, tensors, where) for v in skeleton["$tuple"])
        if "$items" in skeleton:
            return {_hashable(unflatten(k, tensors, where)): unflatten(v, tensors, where) for k, v in skeleton["$items"]}
        return {k: unflatten(v, tensors, where) for k, v in skeleton.items()}
    return skeleton


def _tensor(tensors: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in tensors:
        raise CheckpointError(f"{where}: tensor {key} is missing")
    return tensors[key]


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def save_tree(tree: Any, directory: Path, name: str) -> list[Path]:
    """Write ``<name>.json`` (and ``<name>.safetensors`` when the tree holds tensors); returns the files."""
    from safetensors.torch import save_file

    skeleton, tensors = flatten(tree)
    files = [directory / f"{name}.json"]
    _write(files[0], json.dumps(skeleton).encode())
    if tensors:
        files.append(directory / f"{name}.safetensors")
        save_file(tensors, str(files[1]), metadata={"format": FORMAT})
    return files


def load_tree(directory: Path, name: str) -> Any:
    """The tree ``save_tree`` wrote; the files must have passed ``verify`` first."""
    from safetensors.torch import load_file

    path = directory / f"{name}.json"
    if not path.exists():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    try:
        skeleton = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    tensor_file = directory / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.exists() else {}
    return unflatten(skeleton, tensors, str(path))


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and CUDA generator states of this process (byte tensors and integers)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, files: Iterable[Path], **info: Any) -> None:
    """``checkpoint.json``: the format, ``info`` and every file's size and SHA-256; written last."""
    entries = {}
    for path in sorted(set(files)):
        entries[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    _write(directory / MANIFEST_NAME, json.dumps({"format": FORMAT, **info, "files": entries}, indent=1).encode())


def verify(directory: Path) -> dict[str, Any]:
    """The manifest of the checkpoint in ``directory``, after checking every file it lists; else CheckpointError."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.exists():
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLED_SUFFIXES) if directory.is_dir() else []
        if pickled:
            raise CheckpointError(
                f"{directory}: a checkpoint in the old pickled format ({', '.join(pickled)}); mmemo no longer "
                "unpickles checkpoints, which can run code. Start the run again, or use its best/ model")
        raise CheckpointError(f"{directory}: incomplete checkpoint (no {MANIFEST_NAME})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{manifest_path}: not an mmemo checkpoint manifest ({FORMAT})")
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint; refusing to resume from it")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise CheckpointError(f"{path}: damaged (its size or SHA-256 differs from {MANIFEST_NAME}); "
                                  "refusing to resume from it")
    return manifest


def save_model_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={"format": "pt", "library": "mmemo"})


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")


__all__ = ["flatten", "unflatten", "save_tree", "load_tree", "rng_state", "set_rng_state", "write_manifest", "verify",
           "save_model_weights", "load_model_weights", "MANIFEST_NAME", "MODEL_NAME", "FORMAT"]
