"""The face stage (model.encoders.vision.faces): detection, tracking, selection and crops on generated clips in
which real face photographs (../shared/data/facial_expressions) are pasted at known, moving positions among
distractors; the media report's reason for a clip with no face; the cache key; predict; inspect-vision."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mmemo.cli import main
from mmemo.config import load_config
from mmemo.data.dataset import EmotionDataset, MediaReport
from mmemo.data.demo import write_clip
from mmemo.data.examples import Example
from mmemo.data.faces import FacesConfig, FaceStage, link_tracks, voice_activity
from mmemo.errors import MediaError
from mmemo.inference import EmotionRecognizer
from mmemo.labels import get_label_set
from mmemo.models.encoders.vision import FrameProcessor, HOGConfig, HOGEncoder, TimmConfig, TimmEncoder
from mmemo.models.model import EmotionModel
from mmemo.training.cache import _digest, encoder_fingerprint
from tests.conftest import SHARED, TINY_AUDIO, TINY_VISION

FACES = SHARED / "facial_expressions" / "images"
pytestmark = pytest.mark.skipif(not FACES.exists(), reason="needs ../shared/data/facial_expressions")

W, H, K, SR = 320, 240, 6, 16000  # frame size; sampled frames (data.num_frames); audio rate


def face(name: str) -> Image.Image:
    return Image.open(FACES / name).convert("RGB")


A = "Adisai_Bodharamik_0001.jpg"  # two identities
B = "Bill_Gates_0007.jpg"


def background(seed: int = 0) -> Image.Image:
    """A gradient with distractors: coloured boxes, ellipses, stripes and a patch of noise (no face)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, W)[None, :, None]
    y = np.linspace(0, 1, H)[:, None, None]
    img = Image.fromarray((60 + 120 * x * np.array([1.0, 0.7, 0.4]) + 50 * y).astype(np.uint8).repeat(1, 0))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, W - 40)), int(rng.integers(0, H - 40))
        w, h = int(rng.integers(10, 40)), int(rng.integers(10, 40))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x0 + w, y0 + h), fill=colour)
    for i in range(0, W, 16):
        draw.line((i, H - 12, i + 8, H - 1), fill=(20, 20, 20), width=2)
    noise = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    img.paste(Image.fromarray(noise), (W - 60, 5))
    return img


def clip(path, placements: list[list[tuple[str, int, int, int]]], audio: np.ndarray | None = None, mouth=None):
    """Write an mp4 of ``2 * len(placements)`` frames at 10 fps: step ``s`` (frames 2s and 2s+1) pastes each
    ``(image, x, y, size)`` of ``placements[s]``, so the 6 sampled frames of 12 see the 6 steps whatever frame
    of the pair the decoder shows. ``mouth(step) -> (name, height)`` draws an open mouth on that face."""
    frames = []
    for step, faces in enumerate(placements):
        img = background()
        for name, x, y, size in faces:
            f = face(name).resize((size, size))
            if mouth is not None and mouth(step)[0] == name:
                d = ImageDraw.Draw(f)
                h = mouth(step)[1] * size
                d.ellipse((0.38 * size, 0.76 * size - h / 2, 0.62 * size, 0.76 * size + h / 2), fill=(15, 5, 5))
            img.paste(f, (x, y))
        frames += [np.asarray(img)] * 2
    write_clip(path, np.stack(frames), audio)
    return str(path)


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def square(x, y, size):
    return (x, y, x + size, y + size)


def processor(**faces) -> FrameProcessor:
    config = load_config(None, {"model": {"modalities": ["vision"], "encoders": {"vision": {**TINY_VISION, "faces": faces}}},
                                "data": {"num_frames": K}})
    return FrameProcessor(config.model.encoders["vision"], config.data)


def processor_without_faces(**vision) -> FrameProcessor:
    config = load_config(None, {"model": {"modalities": ["vision"], "encoders": {"vision": {**TINY_VISION, **vision}}},
                                "data": {"num_frames": K}})
    return FrameProcessor(config.model.encoders["vision"], config.data)


def voice(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (level * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("faces")
    moving = [[(A, 20 + 40 * s, 30 + 10 * s, 100)] for s in range(K)]
    # A (top) is larger on average but shrinks below B (bottom) at steps 2 and 4
    a_sizes = [100, 100, 66, 100, 66, 100]
    crossing = [[(A, 10 + 30 * s, 5, a_sizes[s]), (B, 220 - 30 * s, 145, 84)] for s in range(K)]
    two = [[(A, 20, 40, 110), (B, 200, 120, 70)]] * K
    talking = [[(A, 20, 40, 104), (B, 200, 110, 84)]] * K
    paths = {
        "moving": clip(d / "moving.mp4", moving, voice(1.2)),
        "crossing": clip(d / "crossing.mp4", crossing),
        "two": clip(d / "two.mp4", two),
        "none": clip(d / "none.mp4", [[]] * K, voice(1.2)),
        "talking": clip(d / "talking.mp4", talking, voice(1.2), mouth=lambda s: (B, 0.16 if s % 2 else 0.02)),
        "silent": clip(d / "silent.mp4", talking, np.zeros(int(1.2 * SR), np.float32),
                       mouth=lambda s: (B, 0.16 if s % 2 else 0.02)),
    }
    img = background()
    img.paste(face(A).resize((96, 96)), (150, 60))
    img.save(d / "still.png")
    paths["still"] = str(d / "still.png")
    paths["dir"] = d
    return paths, {"moving": moving, "crossing": crossing}


def test_crops_hold_the_pasted_face_as_it_moves(clips):
    paths, placements = clips
    p = processor()
    result = p.face_result(Example("x", video=paths["moving"]))
    assert result.crops.shape == (K, 3, 112, 112) and result.crops.dtype == torch.uint8
    (boxes,) = result.chosen
    for t, ((_, x, y, size),) in enumerate(placements["moving"]):
        assert iou(boxes[t], square(x, y, size)) > 0.5, (t, boxes[t], (x, y, size))
    assert all(len(found) == 1 for found in result.detections)  # no distractor is taken for a face
    # what the encoder gets is the processor's output: the crops
    assert torch.equal(p(Example("x", video=paths["moving"]))["frames"], result.crops)


def test_tracking_follows_one_person_when_another_face_is_larger_in_some_frames(clips):
    paths, placements = clips
    result = processor(select="largest").face_result(Example("x", video=paths["crossing"]))
    a_boxes = [square(x, y, s) for (_, x, y, s), _ in placements["crossing"]]
    b_boxes = [square(x, y, s) for _, (_, x, y, s) in placements["crossing"]]
    # the test means something: a per-frame "largest face" would jump to B in frames 2 and 4
    for t in (2, 4):
        largest = max(result.detections[t], key=lambda d: d.area)
        assert iou(largest.box, b_boxes[t]) > 0.4
    (boxes,) = result.chosen
    assert all(iou(boxes[t], a_boxes[t]) > 0.4 for t in range(K)), boxes.round()
    # and the tracks themselves: one per person, each box of a track on the same person
    tracks = link_tracks(result.detections)
    assert len(tracks) == 2
    for track, truth in zip(tracks, (a_boxes, b_boxes)):
        assert all(d is not None and iou(d.box, truth[t]) > 0.4 for t, d in enumerate(track.detections))


def test_two_faces_largest_picks_the_larger_and_all_keeps_both(clips):
    paths, _ = clips
    big, small = square(20, 40, 110), square(200, 120, 70)
    (boxes,) = processor(select="largest").face_result(Example("x", video=paths["two"])).chosen
    assert all(iou(b, big) > 0.5 for b in boxes)
    result = processor(select="all").face_result(Example("x", video=paths["two"]))
    assert result.crops.shape[0] == 2 * K and len(result.chosen) == 2
    assert iou(result.chosen[0][0], big) > 0.5 and iou(result.chosen[1][0], small) > 0.5


def test_no_face_is_a_media_report_reason_not_a_silent_whole_frame(clips, tmp_path):
    paths, _ = clips
    p = processor()
    with pytest.raises(MediaError) as err:
        p(Example("x", video=paths["none"]))
    assert err.value.reason == "no face found" and "none.mp4" in str(err.value)
    dataset = EmotionDataset([Example("noface", video=paths["none"]), Example("face", video=paths["moving"])], {"vision": p})
    report = MediaReport()
    items = [dataset[0], dataset[1]]
    for item in items:
        report.add(item["issues"])
    assert items[0]["inputs"]["vision"] is None and items[1]["inputs"]["vision"] is not None
    assert report.counts() == {"vision: no face found": 1}
    report.write(tmp_path)
    (row,) = list(csv.DictReader(open(tmp_path / "media_issues.csv")))
    assert row["example_id"] == "noface" and row["reason"] == "no face found" and row["path"].endswith("none.mp4")
    # fallback: frame is explicit, and says so
    out = processor(fallback="frame")(Example("x", video=paths["none"]))
    assert out["frames"].shape == (K, 3, 112, 112)
    assert any("whole frames used" in n for n in out["notes"])
    # the whole frames as the processor gives them without faces (there decoded at the crops' size: a pixel or two
    # of difference on average, from decoding at full size first)
    whole = processor_without_faces(image_size=112)(Example("x", video=paths["none"]))["frames"]
    assert (out["frames"].int() - whole.int()).abs().float().mean() < 3.0


def test_speaker_is_the_face_whose_mouth_moves_while_there_is_voice(clips):
    paths, _ = clips
    b_box = square(200, 110, 84)
    result = processor(select="speaker").face_result(Example("x", video=paths["talking"]))
    assert len(link_tracks(result.detections)) == 2 and not result.notes
    assert all(iou(b, b_box) > 0.5 for b in result.chosen[0])  # the smaller face, because it talks
    # silence: the heuristic has nothing to go on, so the largest face, with a note
    result = processor(select="speaker").face_result(Example("x", video=paths["silent"]))
    assert all(iou(b, square(20, 40, 104)) > 0.5 for b in result.chosen[0])
    assert any("no voice" in n for n in result.notes)


def test_voice_activity_finds_the_voiced_part():
    wav = torch.zeros(SR * 2)
    wav[SR:] = torch.from_numpy(voice(1.0))
    act = voice_activity(wav, 4, SR)
    assert act[:2].max() == 0.0 and act[2:].min() > 0.9


def test_cache_key_includes_the_face_settings():
    def key(faces):
        torch.manual_seed(0)
        config = TimmConfig(backbone="test_resnet", image_size=32, faces=faces)
        enc = TimmEncoder(config)
        return encoder_fingerprint("vision", enc, FrameProcessor(config, None), load_config(None).data)

    plain, default = key(None), key(FacesConfig())
    variants = [key(FacesConfig(min_confidence=0.95)), key(FacesConfig(select="speaker")), key(FacesConfig(margin=0.4)),
                key(FacesConfig(detect_size=None))]
    digests = {_digest(k) for k in [plain, default, *variants]}
    assert len(digests) == 6
    assert plain["code"] != default["code"]  # the face stage's source joins the key


def test_hog_on_face_crops_takes_the_crop_size():
    enc = HOGEncoder(HOGConfig(image_size=128, faces=FacesConfig(size=64), dim=None))
    frames = torch.randint(0, 256, (2, 1, 3, 64, 64), dtype=torch.uint8)
    assert enc(frames, torch.ones(2, 1, dtype=torch.bool)).pooled.shape == (2, 9 * 4 * 7 * 7)


def test_faces_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model\.encoders\.vision\.faces\.margin"):
        processor(margin=-1)
    with pytest.raises(ValueError, match=r"faces\.select: 'biggest' is not allowed"):
        processor(select="biggest")


def test_the_detector_is_not_pickled_and_detections_are_remembered(clips):
    import pickle

    paths, _ = clips
    stage = FaceStage(FacesConfig())
    stage.detector()
    assert pickle.loads(pickle.dumps(stage))._detector is None
    p = processor()
    p(Example("x", video=paths["moving"]))
    assert len(p.faces._memo) == 1
    p(Example("x", video=paths["moving"]))
    assert len(p.faces._memo) == 1


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = load_config(None, {
        "name": "faces", "data": {"num_frames": K, "max_audio_seconds": 2.0},
        "model": {"modalities": ["audio", "vision"],
                  "encoders": {"audio": TINY_AUDIO, "vision": {**TINY_VISION, "faces": {"size": 48}}},
                  "fusion": {"name": "concat", "dim": 16}}})
    label_set = get_label_set("meld7")
    torch.manual_seed(0)
    model = EmotionModel(config.model, len(label_set)).eval()
    return model.save_pretrained(tmp_path_factory.mktemp("models") / "saved", config, label_set)


def test_predict_applies_the_face_stage_and_warns_when_there_is_no_face(clips, saved):
    paths, _ = clips
    rec = EmotionRecognizer.from_pretrained(saved, device="cpu")
    assert rec.config.model.encoders["vision"].faces.size == 48  # the setting travels with the saved model
    pred = rec.predict(video=paths["moving"])
    assert pred.modalities == ["audio", "vision"] and not any("face" in w for w in pred.warnings)
    pred = rec.predict(video=paths["none"])
    assert pred.modalities == ["audio"]
    assert any("no face found" in w and "none.mp4" in w for w in pred.warnings)
    assert rec.predict(image=paths["still"]).modalities == ["vision"]
    assert rec.predict(image=str(FACES / A)).modalities == ["vision"]  # an original photograph: the face fills it
    # the encoder got crops: the model's vision input is 48 px squares
    item = rec.preparer(0, Example("x", video=paths["moving"]))
    assert item["inputs"]["vision"]["frames"].shape == (K, 3, 48, 48)


def test_inspect_vision_writes_a_contact_sheet(clips, saved, tmp_path, capsys):
    paths, _ = clips
    config = tmp_path / "faces.yaml"
    config.write_text(f"model:\n  modalities: [vision]\n  encoders:\n    vision: {TINY_VISION}\n".replace("'", "")
                      + f"data: {{num_frames: {K}}}\n")
    out = tmp_path / "crops.png"
    assert main(["inspect-vision", str(config), paths["crossing"], "--out", str(out),
                 "model.encoders.vision.faces={select: all}"]) == 0
    printed = capsys.readouterr().out
    assert "faces found per sampled frame: [2, 2, 2, 2, 2, 2]" in printed and "12 frame(s) of 112 px" in printed
    with Image.open(out) as img:
        assert img.width > 400 and img.height > 300
    out2 = tmp_path / "saved.png"
    assert main(["inspect-vision", str(saved), paths["none"], "--out", str(out2)]) == 0
    assert "no face found" in capsys.readouterr().out and out2.exists()


def test_a_face_thumbnail_smaller_than_the_smallest_face_searched_for_is_enlarged_and_found():
    from mmemo.data.media import read_image

    frames = read_image(FACES / "Avinash_28.jpg")  # 59 x 65 px, the face fills it
    assert min(frames.shape[-2:]) < 2 * FacesConfig().min_face_size
    result = FaceStage(FacesConfig(size=64))(frames, "Avinash_28.jpg")
    (boxes,) = result.chosen
    assert result.crops.shape == (1, 3, 64, 64)
    assert iou(boxes[0], (0, 0, frames.shape[-1], frames.shape[-2])) > 0.5


def test_landmark_square_recovers_a_known_similarity():
    from mmemo.data.faces import FACE_TEMPLATE, landmark_square

    margin, side, angle, centre = 0.2, 150.0, math.radians(20), np.array([300.0, 200.0])
    unit = (FACE_TEMPLATE - 0.5) / (1 + 2 * margin)  # the template in crop units, about the crop's centre
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = centre + side * unit @ rotation.T
    got_centre, got_side, got_angle = landmark_square(points, margin)
    assert np.allclose(got_centre, centre) and got_side == pytest.approx(side) and got_angle == pytest.approx(angle)


def test_aligned_crops_put_a_turned_face_upright_with_its_eyes_on_the_template():
    """A face turned by 25 degrees in the frame: with ``align`` its crop shows it upright, eyes where the template
    puts them (found again by the detector on the crop); the upright square around the box keeps it turned."""
    from mmemo.data.faces import FACE_TEMPLATE

    frame = background()
    frame.paste(face(A).resize((120, 120)).rotate(25, resample=Image.BILINEAR, fillcolor=(90, 90, 90)), (100, 60))
    frames = torch.from_numpy(np.asarray(frame).copy()).permute(2, 0, 1)[None]
    margin, size = 0.3, 112
    expected = (0.5 + (FACE_TEMPLATE[:2] - 0.5) / (1 + 2 * margin)) * size  # the eyes in the crop
    tilts = {}
    for align in (True, False):
        result = FaceStage(FacesConfig(size=size, margin=margin, align=align))(frames, "turned")
        (found,) = FaceStage(FacesConfig(min_face_size=20, detect_size=None)).detect(result.crops)
        (eyes,) = [d.landmarks[:2] for d in found]
        tilts[align] = math.degrees(math.atan2(*(eyes[1] - eyes[0])[::-1]))
        (corners,) = result.regions  # where the crop was cut, as inspect-vision draws it: turned with the face
        top = corners[0, 1] - corners[0, 0]
        turn = math.degrees(math.atan2(top[1], top[0]))
        if align:
            assert np.abs(eyes - expected).max() < 4, (eyes, expected)
            assert abs(turn + 25) < 5, turn  # PIL turns the face counter-clockwise: its eye line is at -25 degrees
        else:
            assert turn == pytest.approx(0.0)
    assert abs(tilts[True]) < 4 and abs(tilts[False]) > 15, tilts


def test_the_channels_last_detector_finds_the_boxes_of_the_plain_one():
    from facenet_pytorch import MTCNN

    frame = background()
    frame.paste(face(A).resize((100, 100)), (60, 50))
    frame.paste(face(B).resize((80, 80)), (200, 120))
    frames = torch.from_numpy(np.asarray(frame).copy()).permute(2, 0, 1)[None]
    (found,) = FaceStage(FacesConfig()).detect(frames)
    boxes, probs = MTCNN(keep_all=True, min_face_size=32, device="cpu").detect(frames.permute(0, 2, 3, 1).numpy())
    plain = sorted(b.tolist() for b, p in zip(boxes[0], probs[0]) if p >= 0.9)
    assert len(found) == len(plain) == 2
    assert np.abs(np.array(sorted(d.box.tolist() for d in found)) - np.array(plain)).max() < 0.05
