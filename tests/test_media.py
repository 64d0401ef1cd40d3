import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo.data import media
from mmemo.data.demo import make_frames, write_clip
from mmemo.data.media import MediaError, load_audio, load_image, load_video_frames, uniform_indices


@pytest.fixture(params=["torchcodec", "pyav"])
def audio_backend(request, monkeypatch) -> str:
    """Each audio test runs with both decoders: torchcodec, and the PyAV fallback for machines without FFmpeg."""
    monkeypatch.setattr(media, "audio_backend", lambda: request.param)
    return request.param


def test_wav_is_resampled_to_mono_at_the_configured_rate(tmp_path, audio_backend):
    sr, seconds = 44100, 1.5
    t = np.arange(int(sr * seconds)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32) * 0.5
    sf.write(tmp_path / "a.wav", stereo, sr)
    wav = load_audio(tmp_path / "a.wav", sample_rate=16000)
    assert wav.dtype.is_floating_point and wav.dim() == 1
    assert abs(wav.numel() - 16000 * seconds) <= 16  # duration kept to a millisecond
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.numel() - 440) < 3  # the pitch survived resampling


def test_max_seconds_truncates(tmp_path, audio_backend):
    sf.write(tmp_path / "long.flac", np.random.default_rng(0).normal(0, 0.1, 16000 * 5).astype(np.float32), 16000)
    wav = load_audio(tmp_path / "long.flac", 16000, max_seconds=2.0)
    assert wav.numel() == 32000


def test_real_ravdess_wav_with_extra_chunk(shared_data, audio_backend):
    wav = load_audio(shared_data / "ravdess_speech" / "Actor_08" / "03-01-01-01-01-01-08.wav", 16000)
    assert wav.numel() / 16000 == pytest.approx(3.503, abs=0.01)  # labels.csv: 3.503 s at 48 kHz


def test_pyav_fallback_decodes_what_torchcodec_decodes(shared_data, monkeypatch):
    clip = shared_data / "ravdess_speech" / "Actor_08" / "03-01-01-01-01-01-08.wav"  # 48 kHz
    for window in ({}, {"start": 0.5, "max_seconds": 1.25}):
        monkeypatch.setattr(media, "audio_backend", lambda: "torchcodec")
        reference = load_audio(clip, 16000, **window).numpy()
        monkeypatch.setattr(media, "audio_backend", lambda: "pyav")
        fallback = load_audio(clip, 16000, **window).numpy()
        assert abs(fallback.size - reference.size) <= 16, window
        n = min(fallback.size, reference.size)
        assert np.corrcoef(fallback[:n], reference[:n])[0, 1] > 0.999, window  # the same samples, aligned (one sample off: 0.95)
    assert reference.size == 20000


def test_audio_falls_back_to_pyav_when_torchcodec_cannot_load(monkeypatch):
    assert media.audio_backend.__wrapped__() == "torchcodec"  # this machine has FFmpeg's libraries
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # what a failed import looks like
    assert media.audio_backend.__wrapped__() == "pyav"


def test_mp4_audio_and_k_frames(tmp_path, audio_backend):
    rng = np.random.default_rng(0)
    frames = make_frames(rng, "joy", 20, 64)
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000)).astype(np.float32)
    write_clip(tmp_path / "c.mp4", frames, audio, fps=10, sample_rate=16000)
    wav = load_audio(tmp_path / "c.mp4", 16000)
    assert wav.numel() / 16000 == pytest.approx(2.0, abs=0.15)  # AAC adds at most a frame of priming/padding
    video = load_video_frames(tmp_path / "c.mp4", num_frames=6, size=32)
    assert video.shape == (6, 3, 32, 32) and video.dtype.is_floating_point is False
    # frames are spread over the clip: the first and last sampled frames differ (the face moves)
    assert (video[0].float() - video[-1].float()).abs().mean() > 1
    short = load_video_frames(tmp_path / "c.mp4", num_frames=30, size=16)
    assert short.shape[0] == 30  # repeats frames when the clip has fewer than K


def test_uniform_indices_cover_the_clip():
    assert uniform_indices(100, 4) == [12, 37, 62, 87]
    assert uniform_indices(2, 4) == [0, 0, 1, 1]


def test_image_is_a_one_frame_video(shared_data):
    img = shared_data / "facial_expressions" / "images" / "Adisai_Bodharamik_0001.jpg"  # greyscale
    frames = load_image(img, size=48)
    assert frames.shape == (1, 3, 48, 48)
    assert load_video_frames(img, num_frames=8, size=48).shape == (1, 3, 48, 48)


def test_undecodable_files_name_the_file_and_reason(tmp_path, audio_backend):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(MediaError, match=r"bad.mp4: cannot decode audio"):
        load_audio(bad)
    with pytest.raises(MediaError, match=r"bad.mp4: cannot decode video"):
        load_video_frames(bad)
    with pytest.raises(MediaError, match=r"nope.wav: missing file"):
        load_audio(tmp_path / "nope.wav")
    silent_video = tmp_path / "noaudio.mp4"
    write_clip(silent_video, make_frames(np.random.default_rng(1), "anger", 5, 32), None)
    with pytest.raises(MediaError, match="noaudio.mp4: no audio track"):
        load_audio(silent_video)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.wav: empty file"):
        load_audio(empty)
    text = tmp_path / "photo.png"
    text.write_text("not an image")
    with pytest.raises(MediaError, match="photo.png: cannot decode image"):
        load_image(text)


def _numbered_clip(path, n_frames, keyframe_every, fps=24, bframes=0):
    """Frame i shows i in its colour (4 bits per channel), so a test can tell which frames were sampled."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": f"bframes={bframes}:b-adapt=0:b-pyramid=none"}
        stream.codec_context.gop_size = keyframe_every
        for i in range(n_frames):
            rgb = np.zeros((48, 64, 3), np.uint8)
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = (i % 16) * 16, (i // 16 % 16) * 16, (i // 256) * 16
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def _frame_numbers(frames):
    digits = (frames.float().mean(dim=(2, 3)) / 16).round().long()
    return (digits[:, 0] + 16 * digits[:, 1] + 256 * digits[:, 2]).tolist()


@pytest.mark.parametrize("keyframe_every", [24, 100000])
def test_long_video_samples_the_right_frames_with_or_without_keyframes_to_seek_to(tmp_path, keyframe_every):
    n = 24 * 60  # a minute: sampled frames lie far apart, so the decoder seeks (or, with one keyframe, decodes through)
    _numbered_clip(tmp_path / "long.mp4", n, keyframe_every)
    frames = load_video_frames(tmp_path / "long.mp4", num_frames=6, size=None)
    assert frames.shape == (6, 3, 48, 64)
    assert _frame_numbers(frames) == uniform_indices(n, 6)


def _decoded_kinds(path):
    import av
    from av.video.frame import PictureType

    with av.open(str(path)) as container:
        return {PictureType(frame.pict_type).name for frame in container.decode(video=0)}


@pytest.mark.parametrize("num_frames, bframes", [(8, 3), (24, 1)])
def test_b_frames_are_skipped_but_samples_stay_in_their_segments(tmp_path, num_frames, bframes):
    n = 72  # 3 s at 24 fps; B-frames skipped for 8 samples (9 frames apart), non-reference frames for 24 (3 apart)
    _numbered_clip(tmp_path / "b.mp4", n, 250, bframes=bframes)
    assert "B" in _decoded_kinds(tmp_path / "b.mp4")
    shown = _frame_numbers(load_video_frames(tmp_path / "b.mp4", num_frames=num_frames, size=None))
    targets = uniform_indices(n, num_frames)
    assert shown != targets  # some samples did land on skipped frames
    assert all(t - n / num_frames / 2 <= s <= t for s, t in zip(shown, targets)), (shown, targets)
    assert len(set(shown)) == num_frames  # samples never merge


def test_long_runs_of_b_frames_fall_back_to_decoding_every_frame(tmp_path):
    _numbered_clip(tmp_path / "b16.mp4", 72, 250, bframes=16)  # a skipped sample would move by up to 16 frames
    shown = _frame_numbers(load_video_frames(tmp_path / "b16.mp4", num_frames=8, size=None))
    assert shown == uniform_indices(72, 8)


def test_in_memory_audio_layouts_and_integer_pcm():
    from mmemo.data.media import read_audio

    sr = 8000
    tone = (0.5 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)).astype(np.float32)
    mono = read_audio((tone, sr), sample_rate=16000)
    assert mono.shape == (16000,) and mono.dtype == torch.float32
    stereo_first = read_audio((np.stack([tone, tone]), sr), sample_rate=16000)  # [channels, samples]
    stereo_last = read_audio((np.stack([tone, tone], 1), sr), sample_rate=16000)  # [samples, channels]
    assert torch.allclose(stereo_first, mono) and torch.allclose(stereo_last, mono)
    pcm16 = read_audio(((tone * 32768).astype(np.int16), sr), sample_rate=sr)
    assert torch.allclose(pcm16, torch.from_numpy(tone), atol=1e-4)
    assert read_audio((tone, sr), sample_rate=sr, max_seconds=0.25).numel() == sr // 4
