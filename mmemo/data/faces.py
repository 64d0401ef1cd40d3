"""The face stage of the vision processor: detect faces in a clip's sampled frames, track them across the
frames, pick one track (the largest, or the speaker), and crop it, aligned and resized, for the encoder.

A face that fills a small part of a frame becomes a blur when the whole frame is shrunk to the encoder's
input size; every strong multimodal emotion system crops faces first. Detection is facenet-pytorch's MTCNN
(Zhang et al. 2016), whose weights ship inside its wheel, so it runs offline; it runs on the sampled
frames of one clip as one batch, in the DataLoader workers, never on the model's hot path.

- **Detection** runs on a copy of the frames whose shorter side is at most ``detect_size`` pixels (faster);
  boxes are mapped back and crops are cut from the full-resolution frames.
- **Tracking** links each frame's faces to the tracks of the earlier frames by position, size and
  appearance (a small grey thumbnail), so that ``select: largest`` follows one person instead of jumping
  to whichever face is largest in each frame. A frame where the chosen track was not detected takes its
  box from the neighbouring frames (linear interpolation, or the nearest at the ends).
- **Selection**: ``largest`` is the track with the greatest summed box area over the frames; ``speaker``
  is the track whose mouth region changes most between frames while the audio has voice (see
  ``speaker_track``); ``all`` keeps every track, largest first, up to ``max_faces``.
- **Crops** (``align``) map the face's five landmarks (eyes, nose tip, mouth corners) onto the standard
  five-point template (ArcFace's) by a similarity transform, so that every crop frames the face alike
  whatever the detector's box did; the template's square is grown by ``margin`` of its side on each side
  and resized to ``size``. Without ``align``, the crop is the upright square around the box, grown alike.

A clip where no face reaches ``min_confidence`` in any frame raises ``MediaError("no face found")``: the
dataset marks vision absent for that example and the media report counts it; ``fallback: frame`` uses
the whole frames instead, with a note.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mmemo.data.media import describe, media_identity, read_audio, resize_like_decoder
from mmemo.errors import ConfigError, MediaError

log = logging.getLogger(__name__)


@dataclass
class FacesConfig:
    """Crop faces before the vision encoder (``model.encoders.vision.faces``); null: the encoder sees whole frames."""

    detector: Literal["mtcnn"] = "mtcnn"  # facenet-pytorch's MTCNN (pip install 'mmemo[faces]'); weights ship in its wheel
    # largest: the track with the greatest face area over the clip; speaker: the track whose mouth moves most
    # while the audio has voice (falls back to largest, with a note); all: every track, largest first
    select: Literal["largest", "speaker", "all"] = "largest"
    margin: float = 0.0  # the crop adds this fraction of the face's square (the template's, or the box) on each side
    size: int = 112  # crops are resized to this square (the encoder's input size)
    min_confidence: float = 0.9  # detections below this probability are ignored
    align: bool = True  # map the five landmarks onto the standard five-point template; false: the square around the box
    min_face_size: int = 32  # smallest face searched for, in pixels of the detection copy (64 px of a 720p frame)
    detect_size: int | None = 360  # detect on a copy whose shorter side is at most this (null: full size); crops use full size
    max_faces: int = 4  # select: all: at most this many tracks
    fallback: Literal["none", "frame"] = "none"  # none: no face marks vision absent; frame: use whole frames, with a note

    def validate(self, key: str) -> None:
        checks = [("margin", 0.0 <= self.margin <= 2.0, "in [0, 2]"), ("size", self.size >= 8, "at least 8"),
                  ("min_confidence", 0.0 <= self.min_confidence <= 1.0, "in [0, 1]"),
                  ("min_face_size", self.min_face_size >= 12, "at least 12 (MTCNN's smallest window)"),
                  ("detect_size", self.detect_size is None or self.detect_size >= 48, "at least 48, or null"),
                  ("max_faces", self.max_faces >= 1, "at least 1")]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"{key}.{name}: must be {allowed}, got {getattr(self, name)!r}")


@dataclass
class Detection:
    """One face in one frame, in full-resolution pixels."""

    box: np.ndarray  # [4] x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None  # [5, 2]: left eye, right eye, nose, mouth left, mouth right
    thumb: np.ndarray | None = None  # a small normalised grey patch, for matching across frames

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


@dataclass
class Track:
    """One face followed across the frames: ``detections[t]`` is None where it was not detected."""

    detections: list[Detection | None]

    @property
    def area(self) -> float:
        return sum(d.area for d in self.detections if d is not None)

    def boxes(self) -> np.ndarray:
        """``[K, 4]``: detected boxes, the gaps filled from the neighbouring frames."""
        return _fill([None if d is None else d.box for d in self.detections])

    def landmarks(self) -> np.ndarray | None:
        points = [None if d is None or d.landmarks is None else d.landmarks.reshape(-1) for d in self.detections]
        return None if all(p is None for p in points) else _fill(points).reshape(len(points), 5, 2)


@dataclass
class FaceResult:
    """What the stage made of one clip: crops for the encoder, and what a person needs to check them."""

    crops: torch.Tensor  # uint8 [N, 3, size, size]
    detections: list[list[Detection]]  # every face found, per frame
    chosen: list[np.ndarray]  # per selected track, its boxes [K, 4]
    regions: list[np.ndarray] = field(default_factory=list)  # per selected track, each crop's corners [K, 4, 2]
    notes: list[str] = field(default_factory=list)


def _fill(values: list[np.ndarray | None]) -> np.ndarray:
    """Missing entries interpolated linearly between the known ones (held at the ends)."""
    known = [i for i, v in enumerate(values) if v is not None]
    out = np.stack([values[known[0]] if v is None else v for v in values]).astype(np.float64)
    for j in range(out.shape[1]):
        out[:, j] = np.interp(np.arange(len(values)), known, [values[i][j] for i in known])
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _thumb(grey: np.ndarray, box: np.ndarray, side: int = 16) -> np.ndarray:
    """The box's content as a ``side`` x ``side`` grey patch with zero mean and unit norm."""
    h, w = grey.shape
    x0, y0 = int(np.clip(box[0], 0, w - 1)), int(np.clip(box[1], 0, h - 1))
    x1, y1 = int(np.clip(math.ceil(box[2]), x0 + 1, w)), int(np.clip(math.ceil(box[3]), y0 + 1, h))
    patch = grey[y0:y1, x0:x1]
    ys = np.linspace(0, patch.shape[0] - 1, side).round().astype(int)
    xs = np.linspace(0, patch.shape[1] - 1, side).round().astype(int)
    p = patch[np.ix_(ys, xs)].astype(np.float64)
    p -= p.mean()
    return p / (np.linalg.norm(p) + 1e-6)


# Tracking: a face may move at most this many box sizes between two sampled frames, and change size by at
# most this factor; within those limits, the cost of a link adds the move (in box sizes), the size change
# (log ratio) and the thumbnails' dissimilarity (1 - correlation).
MAX_MOVE = 1.5
MAX_SCALE = 2.0


def link_tracks(frames: list[list[Detection]]) -> list[Track]:
    """Greedy frame-to-frame association of the detections into tracks (cheapest links first)."""
    k = len(frames)
    tracks: list[Track] = []
    for t, dets in enumerate(frames):
        candidates = []
        for ti, track in enumerate(tracks):
            last = next(d for d in reversed(track.detections[:t]) if d is not None)
            for di, det in enumerate(dets):
                size = math.sqrt(max(last.area, 1.0))
                ca, cb = (last.box[:2] + last.box[2:]) / 2, (det.box[:2] + det.box[2:]) / 2
                move = float(np.linalg.norm(ca - cb)) / size
                scale = abs(math.log(max(det.area, 1.0) / max(last.area, 1.0))) / 2
                if move > MAX_MOVE and _iou(last.box, det.box) == 0.0 or scale > math.log(MAX_SCALE):
                    continue
                look = 1.0 - float((last.thumb * det.thumb).sum()) if last.thumb is not None and det.thumb is not None else 0.5
                candidates.append((move + scale + look, ti, di))
        used_t, used_d = set(), set()
        for _, ti, di in sorted(candidates):
            if ti in used_t or di in used_d:
                continue
            tracks[ti].detections[t] = dets[di]
            used_t.add(ti)
            used_d.add(di)
        for di, det in enumerate(dets):
            if di not in used_d:
                tracks.append(Track([None] * k))
                tracks[-1].detections[t] = det
    return sorted(tracks, key=lambda tr: -tr.area)


def voice_activity(wav: torch.Tensor, segments: int, sample_rate: int = 16000) -> np.ndarray:
    """The fraction of 20-ms windows with voice in each of ``segments`` equal parts of ``wav``: a window has
    voice when its RMS exceeds a tenth of the clip's 95th-percentile RMS (and an absolute floor of 1e-3)."""
    hop = sample_rate // 50
    n = wav.numel() // hop
    if n == 0:
        return np.zeros(segments)
    rms = wav[: n * hop].view(n, hop).pow(2).mean(1).sqrt().numpy()
    voiced = rms > max(1e-3, 0.1 * float(np.percentile(rms, 95)))
    bounds = np.linspace(0, n, segments + 1).round().astype(int)
    return np.array([voiced[a:b].mean() if b > a else 0.0 for a, b in zip(bounds[:-1], bounds[1:])])


def mouth_motion(grey_frames: list[np.ndarray], track: Track, scale: float = 1.0) -> np.ndarray:
    """``[K]``: how much the track's mouth region changes from the previous frame (0 for the first frame and
    where the track was not detected in either frame). The region is the lower middle of the box (between
    the mouth landmarks when known), as a normalised grey patch, so light and head position cancel out.
    ``scale``: frame pixels per pixel of ``grey_frames``."""
    boxes, points = track.boxes() / scale, track.landmarks()
    points = None if points is None else points / scale
    patches = []
    for t, grey in enumerate(grey_frames):
        x0, y0, x1, y1 = boxes[t]
        w, h = x1 - x0, y1 - y0
        if points is not None:
            (mlx, mly), (mrx, mry) = points[t, 3], points[t, 4]
            cx, cy, half = (mlx + mrx) / 2, (mly + mry) / 2, max(abs(mrx - mlx), 0.25 * w) * 0.75
            region = np.array([cx - half, cy - 0.6 * half, cx + half, cy + 0.6 * half])
        else:
            region = np.array([x0 + 0.25 * w, y0 + 0.65 * h, x1 - 0.25 * w, y0 + 0.95 * h])
        patches.append(_thumb(grey, region, side=12))
    seen = [d is not None for d in track.detections]
    motion = np.zeros(len(grey_frames))
    for t in range(1, len(grey_frames)):
        if seen[t] and seen[t - 1]:
            motion[t] = float(np.abs(patches[t] - patches[t - 1]).mean())
    return motion


def speaker_track(tracks: list[Track], grey_frames: list[np.ndarray], voice: np.ndarray | None,
                  scale: float = 1.0) -> tuple[int, str | None]:
    """The index of the speaker's track, and a note when it falls back to the largest (index 0).

    Heuristic: a speaking face's mouth region changes between frames while the audio has voice. Each
    track scores the mean of its mouth motion from frame t-1 to t, weighted by the voice in the two frames'
    parts of the audio; the highest score wins. Falls back to the largest track when there is no voice
    (no audio, silence) or no track was seen in two consecutive frames."""
    if len(tracks) == 1:
        return 0, None
    if voice is None:
        return 0, "faces: select speaker: no audio to find the speaker by; the largest face was used"
    weight = np.zeros(len(voice))
    weight[1:] = (voice[1:] + voice[:-1]) / 2
    if weight.sum() <= 0:
        return 0, "faces: select speaker: no voice in the audio; the largest face was used"
    scores = []
    for track in tracks:
        seen = np.array([d is not None for d in track.detections])
        both = np.zeros(len(seen), bool)
        both[1:] = seen[1:] & seen[:-1]
        w = weight * both
        motion = mouth_motion(grey_frames, track, scale)
        scores.append(float((motion * w).sum() / w.sum()) if w.sum() > 0 else -1.0)
    if max(scores) < 0:
        return 0, "faces: select speaker: no face was seen in two consecutive frames; the largest face was used"
    return int(np.argmax(scores)), None


# The five landmarks of a frontal face in a 112-px square (eyes, nose tip, mouth corners): the ArcFace template
# of insightface's face_align.py, the field's standard for aligned crops; here in units of that square.
FACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                          [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0


def landmark_square(points: np.ndarray, margin: float) -> tuple[np.ndarray, float, float]:
    """The square (centre, side, angle in radians) that maps ``FACE_TEMPLATE``, grown by ``margin`` of its side
    on each side, onto the five ``points`` ([5, 2]) with the least squared error: a similarity transform
    (scale, rotation, shift), fitted in closed form. The landmarks fix scale and position far more steadily
    than the detector's box, which wanders with hair, pose and the frame's edge, so every crop frames the face
    alike. (scikit-image's ``SimilarityTransform`` does the same fit; it would be a dependency for four lines.)"""
    dst = (FACE_TEMPLATE - 0.5) / (1 + 2 * margin)  # the template in crop units: the crop is [-0.5, 0.5]^2
    u, v = dst[:, 0], dst[:, 1]
    one, zero = np.ones(5), np.zeros(5)
    # source = [[a, -b], [b, a]] @ (u, v) + (tx, ty), for a, b, tx, ty
    design = np.concatenate([np.stack([u, -v, one, zero], 1), np.stack([v, u, zero, one], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([points[:, 0], points[:, 1]]), rcond=None)
    return np.array([tx, ty]), float(math.hypot(a, b)), float(math.atan2(b, a))


def box_square(box: np.ndarray, margin: float) -> tuple[np.ndarray, float, float]:
    """The square (centre, side, angle 0) around ``box``, grown by ``margin`` of its longer side on each side."""
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), float(side), 0.0


def crop_square(frame: np.ndarray, centre: np.ndarray, side: float, angle: float, size: int) -> np.ndarray:
    """A ``size`` x ``size`` RGB crop of an ``[H, W, 3]`` frame: the square of ``side`` pixels about ``centre``,
    turned by ``angle`` (its x axis along that direction). Pixels outside the frame are black. Only the region
    the square can reach is copied out of the frame."""
    from PIL import Image

    reach = 0.75 * side + 2  # half the square's diagonal, and a pixel or two for the filter
    h, w = frame.shape[:2]
    cx, cy = float(centre[0]), float(centre[1])
    x0, y0 = int(np.clip(math.floor(cx - reach), 0, w - 1)), int(np.clip(math.floor(cy - reach), 0, h - 1))
    x1, y1 = int(np.clip(math.ceil(cx + reach), x0 + 1, w)), int(np.clip(math.ceil(cy + reach), y0 + 1, h))
    image = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
    cx, cy = cx - x0, cy - y0
    scale = side / size
    factor = int(scale // 2) if scale >= 4 else 1  # shrink by whole factors first: bilinear alone would alias
    if factor > 1:
        image = image.reduce(factor)
        cx, cy, scale = cx / factor, cy / factor, scale / factor
    cos, sin, half = math.cos(angle) * scale, math.sin(angle) * scale, size / 2
    a, b, d, e = cos, -sin, sin, cos
    data = (a, b, cx - (a + b) * half, d, e, cy - (d + e) * half)
    return np.asarray(image.transform((size, size), Image.AFFINE, data, resample=Image.BILINEAR), dtype=np.uint8)


def face_square(box: np.ndarray, landmarks: np.ndarray | None, margin: float) -> tuple[np.ndarray, float, float]:
    """The square a face's crop is cut from: aligned on its five ``landmarks`` ([5, 2]; ``landmark_square``)
    when given, else the upright square around its ``box``."""
    return landmark_square(landmarks, margin) if landmarks is not None else box_square(box, margin)


def square_corners(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """``[4, 2]``: the corners of the square (top left, top right, bottom right, bottom left, as the crop shows
    them) in frame pixels, for drawing where a crop came from."""
    cos, sin = math.cos(angle), math.sin(angle)
    unit = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * side
    return centre + unit @ np.array([[cos, -sin], [sin, cos]]).T


class FaceStage:
    """Detect, track, select and crop faces in one clip's frames (see the module docstring).

    The detector is built on first use in each process (DataLoader workers included) and is not pickled.
    Detections of a file are remembered per process (by path, size and modification time, with the frame
    count), so training epochs after the first only crop; a process keeps at most ``MEMO_SIZE`` clips.
    """

    MEMO_SIZE = 50_000

    def __init__(self, config: FacesConfig, sample_rate: int = 16000):
        self.config = config
        self.sample_rate = sample_rate
        self._detector = None
        self._memo: dict[str, list[list[Detection]]] = {}
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_detector": None}

    def detector(self):
        if self._detector is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as exc:
                raise ImportError("model.encoders.vision.faces needs facenet-pytorch: pip install 'mmemo[faces]' "
                                  "(facenet-pytorch>=2.5,<2.6)") from exc
            # channels-last weights make MTCNN's convolutions, PReLUs and max-pools run channels-last on the CPU
            # (a third faster here, the same boxes to 1e-4)
            detector = MTCNN(keep_all=True, min_face_size=self.config.min_face_size, device="cpu").eval()
            self._detector = detector.to(memory_format=torch.channels_last)
        return self._detector

    def _small(self, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The detection copy of uint8 ``[K, 3, H, W]`` frames (shorter side at most ``detect_size``, at least
        twice ``min_face_size``) and the factor from its pixels to the frames'."""
        _, _, h, w = frames.shape
        smallest = 2 * self.config.min_face_size  # MTCNN finds nothing in (and fails on) a frame below its face size
        if min(h, w) < smallest:
            scale = min(h, w) / smallest  # a small image (a face thumbnail) is enlarged to be searched
        elif not self.config.detect_size or min(h, w) <= self.config.detect_size:
            return frames, 1.0
        else:
            scale = min(h, w) / self.config.detect_size
        size = (max(1, round(h / scale)), max(1, round(w / scale)))
        small = torch.nn.functional.interpolate(frames.contiguous(memory_format=torch.channels_last), size=size,
                                                mode="bilinear", antialias=True, align_corners=False)
        return small.contiguous(), scale

    def detect(self, frames: torch.Tensor) -> list[list[Detection]]:
        """Every face with at least ``min_confidence`` in each of ``frames`` (uint8 ``[K, 3, H, W]``), in
        full-resolution pixels, with a thumbnail for tracking. The frames go to MTCNN as one batch."""
        small, scale = self._small(frames)
        # MTCNN takes [K, H, W, 3] and turns it into [K, 3, H, W] floats: given this view of contiguous [K, 3, H, W]
        # frames, its pyramid runs on contiguous tensors (a third faster than from an array in [K, H, W, 3] order)
        with torch.inference_mode():
            boxes, probs, points = self.detector().detect(small.permute(0, 2, 3, 1), landmarks=True)
        grey = _grey(small)
        out: list[list[Detection]] = []
        for t in range(len(frames)):
            found = []
            if boxes[t] is not None:
                for box, p, pts in zip(boxes[t], probs[t], points[t]):
                    if p is not None and float(p) >= self.config.min_confidence:
                        box = np.asarray(box, np.float64)
                        found.append(Detection(box * scale, float(p), np.asarray(pts, np.float64) * scale,
                                               _thumb(grey[t], box)))
            out.append(found)
        return out

    def _detections(self, frames: torch.Tensor, source: Any) -> list[list[Detection]]:
        key = json.dumps([media_identity(source), len(frames)]) if isinstance(source, str) else None
        if key is not None and key in self._memo:
            return self._memo[key]
        found = self.detect(frames)
        if key is not None and len(self._memo) < self.MEMO_SIZE:
            self._memo[key] = found
        return found

    def __call__(self, frames: torch.Tensor, source: Any = None, audio: Any = None) -> FaceResult:
        """The crops of ``frames`` (uint8 ``[K, 3, H, W]``, full resolution) from ``source`` (for messages and
        the per-process memory of detections); ``audio`` (a path or ``(array, rate)``) is read for
        ``select: speaker``. Raises ``MediaError`` when no face is found and ``fallback`` is none."""
        c = self.config
        source_key = str(source) if isinstance(source, str) or hasattr(source, "__fspath__") else None
        detections = self._detections(frames, source_key)
        tracks = link_tracks(detections) if any(detections) else []
        if not tracks:
            if c.fallback == "frame":
                return FaceResult(resize_like_decoder(frames, c.size), detections, [],
                                  notes=[f"faces: no face found in {describe(source)}; whole frames used (faces.fallback: frame)"])
            raise MediaError(describe(source) if source is not None else "input", "no face found",
                             f"none with confidence >= {c.min_confidence:g} in {len(frames)} sampled frame(s)")
        notes: list[str] = []
        if c.select == "all":
            chosen = tracks[: c.max_faces]
        elif c.select == "speaker":
            small, scale = self._small(frames)
            index, note = speaker_track(tracks, list(_grey(small)), self._voice(audio, len(frames), notes), scale)
            chosen = [tracks[index]]
            notes += [note] if note else []
        else:
            chosen = tracks[:1]
        images = frames.permute(0, 2, 3, 1).numpy()  # views, [K, H, W, 3]
        crops, boxes, regions = [], [], []
        for track in chosen:
            track_boxes, points = track.boxes(), track.landmarks() if c.align else None
            boxes.append(track_boxes)
            squares = [face_square(track_boxes[t], None if points is None else points[t], c.margin) for t in range(len(images))]
            regions.append(np.stack([square_corners(*sq) for sq in squares]))
            crops += [crop_square(image, *sq, c.size) for image, sq in zip(images, squares)]
        crops_t = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
        if notes and not self._warned:  # in training, once per process: predict returns each in its warnings
            log.warning("%s (%s); further face-stage notes of this process are logged at debug level", notes[0],
                        describe(source) if source is not None else "input")
            self._warned = True
        return FaceResult(crops_t, detections, boxes, regions, notes)

    def _voice(self, audio: Any, segments: int, notes: list[str]) -> np.ndarray | None:
        if audio is None:
            return None
        try:
            wav = read_audio(audio, self.sample_rate)
        except MediaError as err:
            notes.append(f"faces: select speaker: audio unusable ({err.reason})")
            return None
        return voice_activity(wav, segments, self.sample_rate)


def _grey(frames: torch.Tensor) -> np.ndarray:
    """Luma of uint8 ``[K, 3, H, W]`` frames, float32 ``[K, H, W]``."""
    r, g, b = frames.unbind(1)
    return (0.299 * r.float() + 0.587 * g.float() + 0.114 * b.float()).numpy()
