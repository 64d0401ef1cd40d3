"""What the vision encoder is shown: a contact sheet of a clip's sampled frames, with the faces found and the
track chosen drawn on them, and the crops the encoder receives (``mmemo inspect-vision``).

A user who turns on face cropping cannot otherwise tell whether the crops hold the right face, or any face:
the sheet makes the face stage's choices visible before a single epoch is trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmemo.config import Config, load_config
from mmemo.data.examples import Example
from mmemo.data.media import IMAGE_SUFFIXES, describe, is_path
from mmemo.errors import ConfigError, MediaError
from mmemo.models.encoders.base import Processor
from mmemo.models.hub import resolve_model_dir
from mmemo.models.model import CONFIG_NAME
from mmemo.registry import ENCODERS


@dataclass
class VisionView:
    """One input as the vision processor sees it: the sampled frames (full size when faces are cropped),
    the boxes per frame (every face found; the chosen track's), and the encoder's input."""

    frames: torch.Tensor  # uint8 [K, 3, H, W]
    shown: torch.Tensor | None  # uint8 [N, 3, S, S], what the encoder gets; None where the input is unusable
    detections: list[list[np.ndarray]] = field(default_factory=list)  # per frame, every box found
    chosen: list[np.ndarray] = field(default_factory=list)  # per chosen track, its boxes [K, 4]
    regions: list[np.ndarray] = field(default_factory=list)  # per chosen track, where each crop was cut [K, 4, 2]
    notes: list[str] = field(default_factory=list)


def vision_config(run_or_config: str | Path, overrides: list[str] | None = None) -> tuple[Config, Path | None]:
    """The config of a YAML file, a run folder (its ``best/``) or a saved model folder, and the folder that
    relative assets resolve against."""
    path = Path(run_or_config).expanduser()
    if path.is_dir():
        folder = resolve_model_dir(path)
        if not (folder / CONFIG_NAME).is_file():
            raise ConfigError(f"{path}: neither a run folder nor a saved model (no {CONFIG_NAME})")
        return load_config(folder / CONFIG_NAME, overrides), folder
    return load_config(path, overrides), None


def vision_processor(config: Config, base_dir: Path | None = None) -> Processor:
    if "vision" not in config.model.modalities:
        raise ConfigError(f"model.modalities: {config.model.modalities} has no vision; nothing to inspect")
    encoder = config.model.encoders["vision"]
    return ENCODERS.get(encoder.name).obj.build_processor(encoder, config.data, base_dir)


def view(processor: Processor, source: str | Path | object, audio: object = None) -> VisionView:
    """``source`` (a video or an image) through ``processor``; an unusable input gives a view without
    ``shown`` and the reason in ``notes``."""
    is_image = is_path(source) and Path(source).suffix.lower() in IMAGE_SUFFIXES
    example = Example(id="inspect", image=source if is_image else None, video=None if is_image else source, audio=audio)
    if is_path(source) and not Path(source).is_file():
        raise MediaError(source, "missing file")
    faces = getattr(processor, "faces", None)
    if faces is None:
        frames = processor(example)["frames"]
        return VisionView(frames, frames, notes=["faces: off (model.encoders.vision.faces is null); whole frames"])
    from mmemo.data.media import read_image, read_video

    frames = read_image(source, None) if is_image else read_video(source, processor.num_frames, None)
    try:
        result = processor.face_result(example)
    except MediaError as err:
        found = faces.detect(frames)
        return VisionView(frames, None, [[d.box for d in f] for f in found], notes=[str(err)])
    return VisionView(frames, result.crops, [[d.box for d in f] for f in result.detections], result.chosen,
                      result.regions, result.notes)


def contact_sheet(v: VisionView, out: str | Path, title: str = "") -> Path:
    """A PNG: the sampled frames with every face found (thin, yellow), the chosen track (thick, green, numbered
    by track) and the square each crop was cut from (dashed, cyan; turned when the crop is aligned), then the
    crops the encoder is given, one row per chosen track."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    k = len(v.frames)
    crops_rows = 0 if v.shown is None or v.shown is v.frames else math.ceil(len(v.shown) / k)
    rows = 1 + crops_rows
    aspect = v.frames.shape[3] / v.frames.shape[2]
    fig, axes = plt.subplots(rows, k, figsize=(max(2.0, 2.0 * aspect) * k, 2.2 * rows), squeeze=False)
    for t in range(k):
        ax = axes[0, t]
        ax.imshow(v.frames[t].permute(1, 2, 0).numpy())
        for box in v.detections[t] if t < len(v.detections) else []:
            ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="yellow", lw=1))
        for i, boxes in enumerate(v.chosen):
            b = boxes[t]
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=2.5))
            ax.text(b[0], b[1], str(i + 1), color="lime", fontsize=8, va="bottom")
        for corners in v.regions:
            ax.add_patch(Polygon(corners[t], closed=True, fill=False, ec="cyan", lw=1.2, ls="--"))
        ax.set_title(f"frame {t + 1}", fontsize=8)
    for r in range(crops_rows):
        for t in range(k):
            ax = axes[1 + r, t]
            index = r * k + t
            if index < len(v.shown):
                ax.imshow(v.shown[index].permute(1, 2, 0).numpy())
                ax.set_title(f"crop {index + 1}" + (f" (track {r + 1})" if crops_rows > 1 else ""), fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    note = "; ".join(v.notes)
    fig.suptitle("\n".join(x for x in (title, note) if x), fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def inspect_vision(run_or_config: str | Path, source: str | Path, out: str | Path, overrides: list[str] | None = None,
                   audio: object = None) -> VisionView:
    """Write the contact sheet of ``source`` as the vision processor of ``run_or_config`` sees it."""
    config, base_dir = vision_config(run_or_config, overrides)
    v = view(vision_processor(config, base_dir), source, audio)
    contact_sheet(v, out, title=describe(source))
    return v


__all__ = ["VisionView", "contact_sheet", "inspect_vision", "view", "vision_config", "vision_processor"]
