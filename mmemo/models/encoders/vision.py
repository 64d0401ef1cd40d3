"""Vision: a timm backbone applied to each of K sampled frames, then pooled over time.

Frames travel as uint8 from the workers (4x less to copy than float) and are normalised on the
model's device. A still image is a one-frame video. With ``faces`` set, the processor crops each frame to
the face it tracks across the clip (``mmemo.data.faces``), and the encoder sees the crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmemo.config import DataConfig, EncoderConfig
from mmemo.data.examples import Example
from mmemo.data.faces import FaceResult, FacesConfig, FaceStage
from mmemo.data.media import is_path, read_image, read_video
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor, masked_mean, pad_stack
from mmemo.registry import register_encoder


@dataclass
class TimmConfig(EncoderConfig):
    name: str = "timm"
    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # timm weights from the hub; offline, give checkpoint_path instead
    checkpoint_path: str | None = None  # a local weights file (safetensors or timm .pth) for the backbone
    model_overrides: dict[str, Any] = field(default_factory=dict)  # kwargs for timm.create_model
    image_size: int | None = None  # None: the backbone's default input size
    grayscale: bool = False  # drop colour (removes a colour-vs-greyscale shortcut in some face datasets)
    augment: bool = False  # training only: random horizontal flips and shifts of up to 1/8 of the frame
    augment_rotation: float = 0.0  # with augment: a random rotation of up to this many degrees (0: off)
    augment_scale: float = 0.0  # with augment: zoom in or out by up to this fraction (0: off)
    augment_jitter: float = 0.0  # with augment: brightness and contrast scaled by up to this fraction (0: off)
    # how the frames become one vector: their mean, attention weights, or a small transformer
    temporal: Literal["mean", "attention", "transformer"] = "mean"
    temporal_layers: int = 1  # temporal: transformer: its layers
    temporal_heads: int = 4  # temporal: transformer: its attention heads
    dim: int | None = None  # project frame features to this size (None: the backbone's)
    # Out of training, run the backbone on at most this many frames at a time; None: 8 on CPU (larger batches
    # cost more per frame there), every frame at once on other devices.
    eval_frame_chunk: int | None = None
    # Crop faces first: {detector: mtcnn, select: largest | speaker | all, margin, size, min_confidence, ...};
    # the crops (faces.size px) replace the frames. null: whole frames. See docs/faces.md
    faces: FacesConfig | None = None


def frame_size(config: TimmConfig | HOGConfig) -> int | None:
    """The side of the frames the encoder is given: the face crops' size when faces are cropped."""
    return config.faces.size if config.faces is not None else config.image_size


def _pretrained_cfg(backbone: str) -> dict[str, Any]:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001 - unknown tags, third-party models
        cfg = None
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    return cfg


class FrameProcessor(Processor):
    """A video (path, frames array, list of images) -> ``num_frames`` uint8 frames; an image (path, PIL
    image, array) -> one frame; resized to ``image_size`` while decoding. With ``faces``, the frames are
    decoded at full size and the face stage's crops are returned instead (a clip with no face raises
    ``MediaError``; its notes, such as a fallback, travel under ``notes``)."""

    modality = "vision"

    def __init__(self, config: TimmConfig | HOGConfig, data: DataConfig | None):
        self.config = config
        self.num_frames = data.num_frames if data else 8
        self.image_size = config.image_size or int(_pretrained_cfg(config.backbone).get("input_size", (3, 224, 224))[-1])
        faces = getattr(config, "faces", None)
        self.faces = FaceStage(faces, data.sample_rate if data else 16000) if faces is not None else None

    def parts(self) -> tuple[object, ...]:
        return (self.faces,) if self.faces is not None else ()

    def __call__(self, example: Example) -> dict[str, Any] | None:
        if self.faces is not None:
            result = self.face_result(example)
            if result is None:
                return None
            return {"frames": result.crops, **({"notes": result.notes} if result.notes else {})}
        if example.video is not None:
            frames = read_video(example.video, self.num_frames, self.image_size)
        elif example.image is not None:
            frames = read_image(example.image, self.image_size)
        else:
            return None
        return {"frames": frames}

    def face_result(self, example: Example) -> FaceResult | None:
        """The face stage's output for ``example`` (None without video or image): crops, every detection
        and the chosen track's boxes, for the contact sheet of ``mmemo inspect-vision``."""
        if self.faces is None:
            raise ValueError("face_result: this processor crops no faces (model.encoders.vision.faces is null)")
        if example.video is not None:
            source, frames = example.video, read_video(example.video, self.num_frames, None)
        elif example.image is not None:
            source, frames = example.image, read_image(example.image, None)
        else:
            return None
        audio = None
        if self.faces.config.select == "speaker":
            audio = example.audio if example.audio is not None else (source if is_path(source) and example.video is not None else None)
        return self.faces(frames, source, audio)

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        frames, mask = pad_stack([it["frames"] for it in items])
        return {"frames": frames, "frame_mask": mask}


class TemporalPooling(nn.Module):
    """Frame features ``[B, K, D]`` -> ``[B, D]``: mean, attention weights, or a small transformer."""

    def __init__(self, kind: str, dim: int, layers: int = 1, heads: int = 4, max_frames: int = 64):
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.score = nn.Sequential(nn.Linear(dim, dim // 2 or 1), nn.Tanh(), nn.Linear(dim // 2 or 1, 1))
        elif kind == "transformer":
            heads = max(1, min(heads, dim))
            while dim % heads:
                heads -= 1
            self.pos = nn.Parameter(torch.zeros(1, max_frames, dim))
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.1, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        elif kind != "mean":
            raise ValueError(f"temporal pooling '{kind}' unknown; allowed: mean, attention, transformer")

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "transformer":
            seq = self.encoder(seq + self.pos[:, : seq.shape[1]], src_key_padding_mask=~mask)
        if self.kind == "attention":
            scores = self.score(seq).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
            return seq, (weights.unsqueeze(-1) * seq).sum(1)
        return seq, masked_mean(seq, mask)


def augment_frames(x: torch.Tensor, max_shift: float = 0.125) -> torch.Tensor:
    """Random horizontal flip and translation (edge-padded) of each frame ``[N, C, H, W]``: cheap
    augmentation for backbones trained from scratch on a few hundred images."""
    n, _, h, w = x.shape
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    ph, pw = int(h * max_shift), int(w * max_shift)
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph), mode="replicate")
    dy = torch.randint(0, 2 * ph + 1, (n,)).tolist()
    dx = torch.randint(0, 2 * pw + 1, (n,)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def rotate_and_zoom(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Each frame of ``x`` ``[N, C, H, W]`` rotated by ``angle[i]`` radians and magnified ``zoom[i]`` times about
    its centre (bilinear, edges replicated)."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1).to(x.dtype)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jitter_frames(x: torch.Tensor, rotation: float = 0.0, scale: float = 0.0, jitter: float = 0.0) -> torch.Tensor:
    """Random rotation (up to ``rotation`` degrees), zoom (by up to ``scale`` in or out) and brightness and
    contrast (each by up to ``jitter``) of each frame ``[N, C, H, W]`` of 0-255 pixels; edges are
    replicated. The rest of the augmentation for a CNN trained from scratch on a few hundred faces."""
    n = len(x)
    if rotation or scale:
        angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(rotation)
        x = rotate_and_zoom(x, angle, 1 + (torch.rand(n, device=x.device) * 2 - 1) * scale)
    if jitter:
        contrast = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * jitter
        brightness = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * jitter
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean * brightness).clamp(0.0, 255.0)
    return x


def frames_to_sequence(feats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Features of the real frames only ``[n_real, D]`` -> ``[B, K, D]``, zeros at padded frames."""
    b, k = frame_mask.shape
    seq = feats.new_zeros(b * k, feats.shape[-1])
    seq[frame_mask.flatten()] = feats
    return seq.view(b, k, -1)


@register_encoder("timm", config=TimmConfig, modality="vision")
class TimmEncoder(Encoder):
    """A timm image backbone applied per frame, with mean, attention or transformer temporal pooling."""

    modality = "vision"
    processor_class = FrameProcessor

    def __init__(self, config: TimmConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        import timm

        for key, value, high in (("augment_rotation", config.augment_rotation, 180.0),
                                 ("augment_scale", config.augment_scale, 1.0), ("augment_jitter", config.augment_jitter, 1.0)):
            if not 0.0 <= value < high:
                raise ValueError(f"model.encoders.vision.{key} must be in [0, {high:g}) (0 turns it off), got {value}")
        kwargs = dict(config.model_overrides)
        if config.checkpoint_path:
            path = Path(config.checkpoint_path).expanduser()
            if not path.is_absolute() and base_dir is not None and (Path(base_dir) / path).exists():
                path = Path(base_dir) / path
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        self.model = timm.create_model(
            config.backbone, pretrained=config.pretrained or bool(config.checkpoint_path), num_classes=0, **kwargs
        )
        data_cfg = timm.data.resolve_model_data_config(self.model)
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1) * 255.0, persistent=False)
        feat = self.model.num_features
        self.proj = nn.Linear(feat, config.dim) if config.dim else nn.Identity()
        self.dim = config.dim or feat
        self.temporal = TemporalPooling(config.temporal, self.dim, config.temporal_layers, config.temporal_heads)

    def backbone(self) -> nn.Module:
        return self.model

    def save_assets(self, directory: Path, relative: str) -> dict[str, Any]:
        """The backbone's weights travel in ``model.safetensors``: the saved config must neither fetch them
        (``pretrained``) nor read a local file again, and it pins the input size the model was trained at."""
        return {"pretrained": False, "checkpoint_path": None,
                "image_size": self.config.image_size or FrameProcessor(self.config, None).image_size}

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> ModalityEmbedding:
        x = frames.flatten(0, 1)[frame_mask.flatten()].float()  # padded frames are never run through the backbone
        if self.config.augment and self.training:
            x = jitter_frames(augment_frames(x), self.config.augment_rotation, self.config.augment_scale,
                              self.config.augment_jitter)
        if self.config.grayscale:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        chunk = self.config.eval_frame_chunk or (8 if x.device.type == "cpu" else len(x))
        if self.training or len(x) <= chunk:
            feats = self.proj(self.model(x))
        else:  # a batch of clips is many frames: chunks keep memory flat and CPU caches warm (same output)
            feats = torch.cat([self.proj(self.model(c)) for c in x.split(chunk)])
        seq, pooled = self.temporal(frames_to_sequence(feats, frame_mask), frame_mask)
        return ModalityEmbedding(seq, frame_mask, pooled)


# --------------------------------------------------------------------------------------------------
# Histograms of oriented gradients (HOG) + a linear projection
# --------------------------------------------------------------------------------------------------


@dataclass
class HOGConfig(EncoderConfig):
    name: str = "hog"
    image_size: int = 128  # frames are resized (short side) and centre-cropped to this square
    cell_size: int = 8  # pixels per cell side
    orientations: int = 9  # unsigned gradient orientation bins over 0-180 degrees
    block_size: int = 2  # cells per block side; each block is normalised on its own (L2-Hys)
    augment: bool = False  # training only: random horizontal flips and shifts before the histograms
    dim: int | None = 128  # None: the histograms themselves (with the ``probe`` fusion, a linear classifier of HOG)
    dropout: float = 0.3  # dropout before the projection
    # Crop faces first (as for timm); the histograms are then taken on faces.size px crops. null: whole frames
    faces: FacesConfig | None = None


def hog_features(frames: torch.Tensor, cell_size: int = 8, orientations: int = 9, block_size: int = 2) -> torch.Tensor:
    """Dalal-Triggs HOG of ``[N, 3, H, W]`` frames (0-255) on their luma, as scikit-image's ``hog`` computes
    it (``block_norm="L2-Hys"``, to 1e-6): ``[N, F]`` with
    ``F = orientations * block_size**2 * (H // cell_size - block_size + 1) * (W // cell_size - block_size + 1)``.

    Each pixel's gradient magnitude goes to its unsigned orientation's bin, is averaged per cell, and
    each overlapping block of cells is L2-normalised, clipped at 0.2 and normalised again. In torch, so
    that it runs per batch on the model's device, after augmentation.
    """
    luma = (frames.float() * frames.new_tensor([0.299, 0.587, 0.114], dtype=torch.float).view(1, 3, 1, 1)).sum(1) / 255.0
    n, h, w = luma.shape
    if min(h, w) // cell_size < block_size:
        raise ValueError(f"hog: frames of {h}x{w} give fewer than block_size={block_size} cells of {cell_size} px a side")
    gx = torch.zeros_like(luma)
    gy = torch.zeros_like(luma)
    gx[:, :, 1:-1] = luma[:, :, 2:] - luma[:, :, :-2]
    gy[:, 1:-1, :] = luma[:, 2:, :] - luma[:, :-2, :]
    magnitude = torch.sqrt(gx**2 + gy**2)
    degrees = torch.remainder(torch.rad2deg(torch.atan2(gy, gx)), 180.0)
    bins = (degrees / (180.0 / orientations)).floor().long().clamp(0, orientations - 1).unsqueeze(1)
    votes = luma.new_zeros(n, orientations, h, w).scatter_add_(1, bins, magnitude.unsqueeze(1))
    cells = torch.nn.functional.avg_pool2d(votes, cell_size)  # [N, O, H // c, W // c]
    blocks = torch.nn.functional.unfold(cells, block_size)  # [N, O * b * b, blocks]
    eps = 1e-5
    blocks = blocks / torch.sqrt((blocks**2).sum(1, keepdim=True) + eps**2)
    blocks = blocks.clamp(max=0.2)
    blocks = blocks / torch.sqrt((blocks**2).sum(1, keepdim=True) + eps**2)
    # scikit-image's order: block row, block column, cell row, cell column, orientation
    return blocks.view(n, orientations, block_size * block_size, -1).permute(0, 3, 2, 1).flatten(1)


def hog_feature_count(config: HOGConfig) -> int:
    cells = frame_size(config) // config.cell_size
    return config.orientations * config.block_size**2 * (cells - config.block_size + 1) ** 2


@register_encoder("hog", config=HOGConfig, modality="vision")
class HOGEncoder(Encoder):
    """HOG descriptors of each frame's luma and a linear projection: no backbone to learn, so a strong
    baseline where a few hundred images cannot train a CNN from scratch; colour never reaches the model."""

    modality = "vision"
    processor_class = FrameProcessor  # frames resized and centre-cropped; the histograms are taken here

    def __init__(self, config: HOGConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        size = frame_size(config)
        if size // config.cell_size < config.block_size:
            raise ValueError(f"hog: frames of {size} px hold fewer than block_size={config.block_size} "
                             f"cells of cell_size={config.cell_size}")
        n_features = hog_feature_count(config)
        project = nn.Linear(n_features, config.dim) if config.dim is not None else nn.Identity()
        self.proj = nn.Sequential(nn.Dropout(config.dropout), project)
        self.dim = n_features if config.dim is None else config.dim

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> ModalityEmbedding:
        x = frames.flatten(0, 1)[frame_mask.flatten()].float()
        if self.config.augment and self.training:
            x = augment_frames(x)
        c = self.config
        seq = frames_to_sequence(self.proj(hog_features(x, c.cell_size, c.orientations, c.block_size)), frame_mask)
        return ModalityEmbedding(seq, frame_mask, masked_mean(seq, frame_mask))
