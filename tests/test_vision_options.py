"""Vision encoder options the face benchmark relies on: greyscale input and training augmentation."""

import torch

from mmemo.models.encoders.vision import TimmConfig, TimmEncoder, augment_frames


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
