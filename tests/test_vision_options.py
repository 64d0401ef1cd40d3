"""Vision encoder options the face benchmark relies on: greyscale input, training augmentation and the
HOG encoder."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmemo.config import load_config
from mmemo.inference import EmotionRecognizer
from mmemo.models.encoders.vision import (
    HOGConfig,
    HOGEncoder,
    TimmConfig,
    TimmEncoder,
    augment_frames,
    hog_features,
    jitter_frames,
    rotate_and_zoom,
)
from mmemo.training.trainer import Trainer


def _encoder(**options) -> TimmEncoder:
    torch.manual_seed(0)
    return TimmEncoder(TimmConfig(backbone="test_resnet", image_size=32, **options))


def _frames(n=4) -> torch.Tensor:
    """``n`` one-frame colour "videos" of random pixels, uint8 ``[n, 1, 3, 32, 32]``."""
    return torch.randint(0, 256, (n, 1, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_grayscale_makes_the_embedding_blind_to_colour():
    frames = _frames()
    luma = (frames.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
    grey = luma.expand_as(frames).clone()
    mask = torch.ones(4, 1, dtype=torch.bool)
    for grayscale in (True, False):
        enc = _encoder(grayscale=grayscale).eval()
        with torch.no_grad():
            same = torch.allclose(enc(frames, mask).pooled, enc(grey, mask).pooled, atol=1e-4)
        assert same == grayscale


def test_augment_flips_and_shifts_in_training_only():
    frames = _frames()
    mask = torch.ones(4, 1, dtype=torch.bool)
    enc = _encoder(augment=True)
    with torch.no_grad():
        enc.eval()
        assert torch.equal(enc(frames, mask).pooled, enc(frames, mask).pooled)
        enc.train()
        torch.manual_seed(1)
        a = enc(frames, mask).pooled
        torch.manual_seed(2)
        b = enc(frames, mask).pooled
    assert not torch.allclose(a, b)


def test_augment_frames_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float).view(2, 3, 16, 16)
    torch.manual_seed(0)
    out = augment_frames(x)
    assert out.shape == x.shape
    flat = torch.full((5, 3, 16, 16), 7.0)
    assert torch.equal(augment_frames(flat), flat)  # only moves pixels (edges replicated), never invents values
    # each output frame is a flipped or unflipped shift of its own input: its rows come from that input
    for i in range(2):
        assert set(out[i].unique().tolist()) <= set(x[i].unique().tolist())


def test_rotate_and_zoom_by_hand():
    x = torch.arange(2 * 6 * 6, dtype=torch.float).view(2, 1, 6, 6)
    out = rotate_and_zoom(x, torch.tensor([math.pi / 2, 0.0]), torch.tensor([1.0, 2.0]))
    assert torch.allclose(out[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-3)  # a quarter turn moves pixels exactly
    # twice the size about the centre: the corner pixels' centres (0.5 px in from the edge of the 6 px frame) land
    # 0.25 px in from the edge of its middle half, at pixel (1.25, 1.25) and (3.75, 3.75) of x[1] = 36 + 6 row + col
    assert out[1, 0].flatten()[[0, -1]].tolist() == pytest.approx([36 + 7.5 + 1.25, 36 + 22.5 + 3.75], abs=1e-4)
    assert torch.allclose(rotate_and_zoom(x, torch.zeros(2), torch.ones(2)), x, atol=1e-4)


def test_jitter_frames_moves_pixels_and_tones_only_as_asked():
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    assert torch.equal(jitter_frames(x), x)  # every option 0: unchanged
    flat = torch.full((4, 3, 16, 16), 100.0)
    torch.manual_seed(0)
    assert torch.allclose(jitter_frames(flat, rotation=30, scale=0.2), flat, atol=1e-3)  # geometry alone keeps tone
    torch.manual_seed(0)
    toned = jitter_frames(x, jitter=0.2)
    assert toned.min() >= 0 and toned.max() <= 255
    ratio = toned.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
    assert ((ratio > 0.75) & (ratio < 1.25)).all() and ratio.std() > 0.01  # each frame its own brightness
    torch.manual_seed(0)
    turned = jitter_frames(x, rotation=30)
    assert not torch.allclose(turned, x) and torch.allclose(turned.mean(), x.mean(), rtol=0.05)


@pytest.mark.parametrize("key, value", [("augment_rotation", -1.0), ("augment_scale", 1.0), ("augment_jitter", 2.0)])
def test_augment_options_out_of_range_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"model.encoders.vision.{key}"):
        _encoder(augment=True, **{key: value})


def test_encoder_applies_the_extra_augmentation_in_training_only():
    frames = _frames()
    mask = torch.ones(4, 1, dtype=torch.bool)
    enc = _encoder(augment=True, augment_rotation=20.0, augment_scale=0.1, augment_jitter=0.3)
    plain = _encoder(augment=True)
    plain.load_state_dict(enc.state_dict())
    with torch.no_grad():
        enc.eval(), plain.eval()
        assert torch.allclose(enc(frames, mask).pooled, plain(frames, mask).pooled)
        enc.train(), plain.train()
        torch.manual_seed(1)
        a = enc(frames, mask).pooled
        torch.manual_seed(1)
        b = plain(frames, mask).pooled
    assert not torch.allclose(a, b)  # the same flips and shifts, then rotation, zoom and tone on top


def test_chunked_frames_at_evaluation_give_the_same_embedding():
    frames = torch.randint(0, 256, (3, 5, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False  # a shorter clip: its padded frames never reach the backbone
    whole, chunked = _encoder(eval_frame_chunk=64).eval(), _encoder(eval_frame_chunk=4).eval()
    calls = []
    chunked.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    with torch.no_grad():
        a, b = whole(frames, mask), chunked(frames, mask)
    assert calls == [4, 4, 4, 1]  # 13 real frames in chunks of 4
    calls.clear()
    default = _encoder().eval()
    default.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    with torch.no_grad():
        c = default(frames, mask)
    assert calls == [8, 5]  # on CPU the default chunk is 8 frames
    assert torch.allclose(a.pooled, c.pooled, atol=1e-5)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5) and torch.allclose(a.seq, b.seq, atol=1e-5)


def _edge(vertical: bool, size: int = 32) -> torch.Tensor:
    """A black-to-white step at the middle column (vertical) or row, as a ``[1, 3, size, size]`` frame."""
    img = torch.zeros(size, size)
    if vertical:
        img[:, size // 2:] = 255.0
    else:
        img[size // 2:, :] = 255.0
    return img.expand(1, 3, size, size)


def test_hog_of_a_step_edge_by_hand():
    feats = hog_features(_edge(vertical=True)).view(3, 3, 2, 2, 9)  # block row, block col, cell row, cell col, bin
    assert feats.shape == (3, 3, 2, 2, 9)
    # columns 15 and 16 carry a gradient of 1 at 0 degrees: 8 of a cell's 64 pixels, in cell columns 1 and 2.
    # Block (0, 0) holds two such cells (1/sqrt(2) each after L2-Hys); block (0, 1) four (1/2 each).
    assert feats[0, 0, :, 1, 0].tolist() == pytest.approx([1 / math.sqrt(2)] * 2, abs=1e-5)
    assert feats[0, 0, :, 0].abs().max() == 0
    assert feats[0, 1, :, :, 0].flatten().tolist() == pytest.approx([0.5] * 4, abs=1e-5)
    assert feats[..., 1:].abs().max() == 0  # no other orientation
    horizontal = hog_features(_edge(vertical=False)).view(3, 3, 2, 2, 9)
    assert horizontal[1, 0, :, :, 4].flatten().tolist() == pytest.approx([0.5] * 4, abs=1e-5)  # 90 degrees: bin 4 of 9
    assert horizontal[..., :4].abs().max() == 0 and horizontal[..., 5:].abs().max() == 0
    assert hog_features(torch.full((2, 3, 32, 32), 80.0)).abs().max() == 0  # no gradient, no histogram
    with pytest.raises(ValueError, match="block_size=2"):
        hog_features(torch.zeros(1, 3, 12, 12))


def test_hog_encoder_is_blind_to_colour_and_augments_in_training_only():
    torch.manual_seed(0)
    enc = HOGEncoder(HOGConfig(image_size=32, augment=True, dim=16))
    frames = _frames()
    luma = (frames.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
    mask = torch.ones(4, 1, dtype=torch.bool)
    enc.eval()
    with torch.no_grad():
        out = enc(frames, mask)
        assert out.pooled.shape == (4, 16) and enc.dim == 16
        assert torch.allclose(out.pooled, enc(luma.expand_as(frames), mask).pooled, atol=1e-5)
        enc.train()
        torch.manual_seed(1)
        a = enc(frames, mask).pooled
        torch.manual_seed(1)
        b = enc(frames, mask).pooled
        torch.manual_seed(2)
        c = enc(frames, mask).pooled
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_hog_encoder_without_projection_gives_the_histograms_themselves():
    enc = HOGEncoder(HOGConfig(image_size=32, dim=None, dropout=0.5)).eval()
    frames = _frames()
    mask = torch.ones(4, 1, dtype=torch.bool)
    with torch.no_grad():
        out = enc(frames, mask)
    expected = hog_features(frames[:, 0])  # 4 x 4 cells, 3 x 3 blocks of 2 x 2 cells, 9 bins
    assert enc.dim == 324 == expected.shape[1] and not list(enc.parameters())
    assert torch.allclose(out.pooled, expected, atol=1e-6)


def test_hog_encoder_learns_stripe_direction_from_image_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["image,emotion,split"]
    for i in range(36):
        label = ("happiness", "sadness")[i % 2]
        period, phase = rng.integers(4, 9), rng.integers(0, 8)
        wave = 127 + 100 * np.sin(2 * np.pi * (np.arange(48) + phase) / period)
        img = np.tile(wave, (48, 1)) if label == "happiness" else np.tile(wave[:, None], (1, 48))
        img = np.clip(img + rng.normal(0, 20, (48, 48)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label},{'train' if i < 24 else 'dev'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    config = load_config(None, [
        "data.source=manifest", f"data.path={tmp_path / 'labels.csv'}", "data.label_set=faces8",
        "data.columns.image=image", "data.columns.label=emotion", "data.split_column=split",
        "model.modalities=[vision]", "model.encoders.vision.name=hog", "model.encoders.vision.image_size=32",
        "model.fusion.dim=32", "train.epochs=6", "train.batch_size=8", "train.lr=3e-3", "train.metric=accuracy",
        "train.eval_test=false", "train.progress=false", "data.num_workers=0",
    ])
    result = Trainer(config, run_dir=tmp_path / "run").fit()
    assert result.best_metric >= 90.0, result.history  # percent; chance is 50
    recognizer = EmotionRecognizer.from_pretrained(tmp_path / "run" / "best", device="cpu")  # and it predicts new files
    dev = [row.split(",") for row in rows[1:] if row.endswith(",dev")]
    hits = [recognizer.predict(image=str(tmp_path / name)).label == label for name, label, _ in dev]
    assert sum(hits) >= 0.9 * len(hits)


def test_hog_linear_config_is_a_logistic_regression_on_the_histograms(shared_data, tmp_path):
    """scripts/bench/configs/faces/hog_linear.yaml on real face images: nothing trainable but the head's Linear on the
    8100 histograms, an L2 penalty, and the final epoch kept."""
    from mmemo.data.examples import Splits
    from mmemo.data.loading import apply_labels
    from mmemo.data.readers.manifest import read_manifest
    from mmemo.labels import get_label_set

    repo = Path(__file__).resolve().parents[1]
    manifest = shared_data / "facial_expressions" / "labels.csv"
    label_set = get_label_set("faces8")
    columns = {"image": "image", "label": "emotion", "speaker": "identity"}
    examples = apply_labels(read_manifest(manifest, columns=columns)["train"], label_set, {}, "all")[:24]
    config = load_config(repo / "scripts/bench/configs/faces/hog_linear.yaml",
                         [f"data.path={manifest}", "train.epochs=2", "train.progress=false", "train.eval_test=false"])
    trainer = Trainer(config, run_dir=tmp_path / "run", splits=Splits({"train": examples[:16], "dev": examples[16:]}),
                      label_set=label_set)
    model = trainer.unwrapped
    assert model.encoders["vision"].dim == model.fusion.dim == 8100
    assert [name for name, _ in model.named_parameters()] == ["fusion.missing.vision", "head.1.weight", "head.1.bias"]
    batch = next(iter(trainer.train_loader))
    model.eval()
    with torch.no_grad():
        out = model(batch["inputs"], batch["present"])
    frames = batch["inputs"]["vision"]["frames"][:, 0]
    weight, bias = model.head[-1].weight, model.head[-1].bias
    torch.testing.assert_close(out.logits, hog_features(frames) @ weight.T + bias, atol=1e-5, rtol=1e-5)
    result = trainer.fit()
    assert [(t.name, t.weight) for t in config.train.loss_terms] == [("l2", 0.05)] and result.best_epoch == 2 and [h["best"] for h in result.history] == [True, True]
