"""Embedded demo data: a small MELD-shaped tree (three CSVs + real h264/aac mp4 clips written with PyAV).

Each modality carries the label on its own, imperfectly: the wording, the pitch/energy contour of a
synthesised voice-like signal, and a drawn face each show the true emotion in ``express`` of the
clips and a misleading one otherwise, independently. One modality alone therefore tops out near
``express``; fusing them does better. This is what ``make demo`` trains on: no download, and the same
MELD reader as real data.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.data.readers.meld import SPLITS

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENT = {"neutral": "neutral", "joy": "positive", "surprise": "positive", "anger": "negative",
             "sadness": "negative", "disgust": "negative", "fear": "negative"}
CLASS_WEIGHTS = (0.28, 0.14, 0.12, 0.12, 0.12, 0.11, 0.11)
SPEAKERS = ("Rachel", "Ross", "Monica", "Chandler", "Joey", "Phoebe")

PHRASES = {
    "neutral": ["I'm going to the store later", "the meeting is at three", "can you pass me the remote",
                "we should get the check", "I think the bus leaves at nine", "let me find my keys"],
    "joy": ["this is amazing, I love it", "that's wonderful news", "I'm so happy for you",
            "best day ever", "oh, this is great", "you made my day"],
    "surprise": ["wait, what? really?", "no way, are you serious", "you did what?",
                 "oh my god, since when", "I can't believe it, seriously", "whoa, I didn't see that coming"],
    "anger": ["I can't stand this anymore", "how dare you say that", "get out of my apartment",
              "that's completely ridiculous", "stop lying to me", "I'm sick of your excuses"],
    "sadness": ["I miss her so much", "I feel terrible about it", "it's over, she left",
                "nobody came to my party", "I'm so lonely", "I really thought he loved me"],
    "disgust": ["ew, that's disgusting", "gross, don't touch that", "yuck, it smells awful",
                "that's revolting", "ugh, there's hair in my food", "eww, who would eat that"],
    "fear": ["I'm scared, something's wrong", "please don't leave me here", "what if they find out",
             "I heard a noise downstairs", "I'm terrified of the dark", "oh no, we're going to crash"],
}
OPENERS = ["", "", "Well, ", "Okay, ", "Hey, ", "So ", "Oh, ", "Listen, "]
CLOSERS = ["", "", ".", "!", "...", ", you know?"]

# Voice: base pitch (Hz), pitch slope over the utterance (octaves), vibrato (Hz, depth), syllable rate (Hz),
# loudness, breathiness (noise share), brightness (number of harmonics).
VOICE = {
    "neutral": (130, 0.0, (0.0, 0.0), 3.5, 0.25, 0.05, 6),
    "joy": (210, 0.35, (5.0, 0.04), 5.5, 0.55, 0.05, 10),
    "surprise": (190, 0.9, (0.0, 0.0), 4.0, 0.45, 0.05, 8),
    "anger": (170, -0.1, (0.0, 0.0), 6.0, 0.8, 0.25, 16),
    "sadness": (105, -0.45, (0.0, 0.0), 2.2, 0.15, 0.1, 4),
    "disgust": (115, -0.2, (0.0, 0.0), 2.8, 0.3, 0.45, 6),
    "fear": (245, 0.1, (9.0, 0.06), 4.5, 0.2, 0.15, 7),
}

# Face: mouth curve (+ smile, - frown), mouth open (0..1), brow tilt (+ inner up, - inner down = angry),
# brow raise, eye openness.
FACE = {
    "neutral": (0.0, 0.0, 0.0, 0.0, 1.0),
    "joy": (1.0, 0.15, 0.0, 0.1, 0.8),
    "surprise": (0.0, 1.0, 0.0, 1.0, 1.6),
    "anger": (-0.3, 0.0, -1.0, -0.2, 0.8),
    "sadness": (-1.0, 0.0, 1.0, 0.2, 0.7),
    "disgust": (-0.5, 0.25, -0.4, -0.1, 0.5),
    "fear": (-0.2, 0.6, 1.0, 0.9, 1.5),
}


@dataclass
class DemoSpec:
    n_train: int = 280
    n_dev: int = 70
    n_test: int = 70
    n_heldout: int = 4
    express: float = 0.85  # chance that each modality shows the true emotion
    seconds: tuple[float, float] = (1.6, 2.4)
    fps: int = 10
    size: int = 112
    sample_rate: int = 16000
    faults: bool = True  # one missing clip, one corrupt clip, one clip without audio in train
    seed: int = 1234


def _cue(rng: np.random.Generator, label: str, express: float) -> str:
    if rng.random() < express:
        return label
    return str(rng.choice([e for e in EMOTIONS if e != label]))


def make_text(rng: np.random.Generator, cue: str) -> str:
    phrase = str(rng.choice(PHRASES[cue]))
    text = str(rng.choice(OPENERS)) + phrase + str(rng.choice(CLOSERS))
    return text[0].upper() + text[1:]


def make_voice(rng: np.random.Generator, cue: str, seconds: float, sr: int) -> np.ndarray:
    f0, slope, (vib_hz, vib_depth), rate, loud, breath, harmonics = VOICE[cue]
    n = int(seconds * sr)
    t = np.arange(n) / sr
    speaker = rng.uniform(0.85, 1.18)  # speaker-to-speaker pitch differences blur the absolute pitch cue
    contour = f0 * speaker * 2 ** (slope * (t / seconds) + rng.normal(0, 0.03))
    contour = contour * (1 + vib_depth * np.sin(2 * np.pi * vib_hz * t))
    phase = 2 * np.pi * np.cumsum(contour) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    syll = 0.5 * (1 - np.cos(2 * np.pi * rate * rng.uniform(0.9, 1.1) * t + rng.uniform(0, 2 * np.pi)))
    envelope = syll**1.5 * np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)
    noise = rng.normal(0, 1, n)
    sig = ((1 - breath) * voice / 2 + breath * noise * 0.5) * envelope * loud * rng.uniform(0.8, 1.2)
    sig += rng.normal(0, 0.004, n)  # room noise
    return np.clip(sig, -1, 1).astype(np.float32)


def make_frames(rng: np.random.Generator, cue: str, n_frames: int, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    curve, mouth_open, tilt, raise_, eye = FACE[cue]
    bg = tuple(int(c) for c in rng.integers(30, 220, 3))
    skin = tuple(int(c) for c in rng.integers(150, 240, 3))
    cx0, cy0 = size / 2 + rng.normal(0, size * 0.05), size / 2 + rng.normal(0, size * 0.05)
    r = size * rng.uniform(0.3, 0.4)
    frames = []
    for i in range(n_frames):
        k = min(1.0, 0.3 + 1.4 * i / max(1, n_frames - 1))  # the expression builds up over the clip
        cx = cx0 + size * 0.02 * math.sin(i * 0.7)
        cy = cy0 + size * 0.015 * math.cos(i * 0.5)
        img = Image.new("RGB", (size, size), bg)
        d = ImageDraw.Draw(img)
        d.ellipse([cx - r, cy - 1.15 * r, cx + r, cy + 1.15 * r], fill=skin, outline=(60, 40, 30), width=2)
        ex, ey, er = 0.38 * r, cy - 0.25 * r, 0.11 * r
        eo = er * (1 + (eye - 1) * k)
        for s in (-1, 1):
            d.ellipse([cx + s * ex - er, ey - eo, cx + s * ex + er, ey + eo], fill=(255, 255, 255), outline=(0, 0, 0))
            d.ellipse([cx + s * ex - er / 2.5, ey - er / 2.5, cx + s * ex + er / 2.5, ey + er / 2.5], fill=(20, 20, 20))
            by = ey - 0.3 * r - raise_ * k * 0.15 * r
            inner = by - tilt * k * 0.12 * r
            outer = by + tilt * k * 0.12 * r
            d.line([cx + s * 0.15 * r, inner, cx + s * 0.6 * r, outer], fill=(50, 30, 20), width=max(2, int(r * 0.07)))
        my, mw = cy + 0.5 * r, 0.42 * r
        if mouth_open * k > 0.3:
            h = mouth_open * k * 0.28 * r
            d.ellipse([cx - mw * 0.55, my - h, cx + mw * 0.55, my + h], fill=(90, 20, 30), outline=(40, 0, 0))
        pts = []
        for j in range(13):
            x = -1 + 2 * j / 12
            y = curve * k * 0.22 * r * (1 - x * x)  # image y grows downwards: a smile dips in the middle
            if cue == "disgust":
                y += 0.08 * r * k * math.sin(3 * x * math.pi)
            pts.append((cx + x * mw, my + y))
        d.line(pts, fill=(120, 30, 40), width=max(2, int(r * 0.07)))
        frames.append(np.asarray(img))
    arr = np.stack(frames).astype(np.int16)
    arr += rng.integers(-6, 7, arr.shape, dtype=np.int16)  # sensor noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: np.ndarray | None, audio: np.ndarray | None, fps: int = 10, sample_rate: int = 16000) -> None:
    """An mp4 with an h264 video track and/or an AAC audio track, written with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        vstream = astream = None
        if frames is not None:
            vstream = container.add_stream("h264", rate=fps)
            vstream.width, vstream.height = frames.shape[2], frames.shape[1]
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"preset": "ultrafast", "crf": "23"}
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        if vstream is not None:
            for f in frames:
                for packet in vstream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in vstream.encode():
                container.mux(packet)
        if astream is not None:
            frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            for packet in astream.encode(frame):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)


def write_recording(path: str | Path, plan: list[tuple[str, float]], sample_rate: int = 16000, seed: int = 0,
                    utterance: tuple[float, float] = (1.6, 2.4), pause: tuple[float, float] = (0.1, 0.4),
                    transcript: str | Path | None = None, speakers: tuple[str, ...] = ("agent", "caller")) -> Path:
    """A long recording for timelines: for each ``(emotion, seconds)`` of ``plan``, utterances in that emotion's
    voice separated by short pauses, written block by block (a WAV of any length in constant memory). With
    ``transcript``, a CSV of ``start, end, speaker, text`` for every utterance (speakers alternate)."""
    import csv

    import soundfile as sf

    rng = np.random.default_rng(seed)
    path = Path(path)
    rows: list[tuple[float, float, str, str]] = []
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as out:
        t = 0.0
        turn = 0
        for emotion, seconds in plan:
            stop = t + seconds
            while t < stop - 1e-9:
                say = min(rng.uniform(*utterance), stop - t)
                if say >= 0.3:
                    out.write(make_voice(rng, emotion, say, sample_rate))
                    rows.append((t, t + say, speakers[turn % len(speakers)], make_text(rng, emotion)))
                    turn += 1
                else:
                    out.write(np.zeros(int(say * sample_rate), np.float32))
                t += say
                gap = min(rng.uniform(*pause), stop - t)
                if gap > 0:
                    out.write((rng.normal(0, 0.004, int(gap * sample_rate))).astype(np.float32))
                    t += gap
    if transcript is not None:
        with open(transcript, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["start", "end", "speaker", "text"])
            writer.writerows([(f"{a:.3f}", f"{b:.3f}", who, text) for a, b, who, text in rows])
    return path


def write_demo_recording(root: str | Path, minutes: float, segment: float = 20.0, seed: int = 0) -> tuple[Path, Path]:
    """``root/recording.wav``, ``minutes`` long, its emotion changing every ``segment`` seconds (the demo's seven
    emotions in turn), and ``root/recording.csv``, its transcript: something to run ``mmemo timeline`` on."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    total, plan, i = minutes * 60.0, [], 0
    while sum(s for _, s in plan) < total - 1e-9:
        plan.append((EMOTIONS[i % len(EMOTIONS)], min(segment, total - sum(s for _, s in plan))))
        i += 1
    wav, csv = root / "recording.wav", root / "recording.csv"
    write_recording(wav, plan, seed=seed, transcript=csv)
    return wav, csv


def _timestamp(seconds: float, pad_hour: bool) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    hour = f"{int(h):02d}" if pad_hour else f"{int(h)}"
    return f"{hour}:{int(m):02d}:{int(s):02d},{int(round((s % 1) * 1000)) % 1000:03d}"


COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
           "Season", "Episode", "StartTime", "EndTime"]


def _labels(rng: np.random.Generator, n: int) -> list[str]:
    return [str(x) for x in rng.choice(EMOTIONS, size=n, p=np.array(CLASS_WEIGHTS) / sum(CLASS_WEIGHTS))]


def generate_clip(rng: np.random.Generator, label: str, spec: DemoSpec, path: Path) -> str:
    """Write one clip for ``label``; returns its utterance text."""
    seconds = rng.uniform(*spec.seconds)
    text = make_text(rng, _cue(rng, label, spec.express))
    audio = make_voice(rng, _cue(rng, label, spec.express), seconds, spec.sample_rate)
    frames = make_frames(rng, _cue(rng, label, spec.express), max(2, int(seconds * spec.fps)), spec.size)
    write_clip(path, frames, audio, spec.fps, spec.sample_rate)
    return text


def generate_demo_data(root: str | Path, spec: DemoSpec | None = None, progress: bool = True) -> Path:
    """Write the demo MELD tree under ``root``; returns ``root``. Deterministic for a given spec."""
    from tqdm.auto import tqdm

    spec = spec or DemoSpec()
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    sizes = {"train": spec.n_train, "dev": spec.n_dev, "test": spec.n_test}
    total = sum(sizes.values()) + spec.n_heldout
    bar = tqdm(total=total, desc="demo clips", disable=not progress, leave=False)
    sr_no = 0
    for split, n in sizes.items():
        csv_name, clip_dir = SPLITS[split]
        (root / clip_dir).mkdir(parents=True, exist_ok=True)
        rows = []
        labels = _labels(rng, n)
        dia, utt, clock = 0, 0, 60.0
        dialogue_len = int(rng.integers(3, 9))
        for label in labels:
            if utt >= dialogue_len:
                dia, utt, dialogue_len = dia + 1, 0, int(rng.integers(3, 9))
            text = generate_clip(rng, label, spec, root / clip_dir / f"dia{dia}_utt{utt}.mp4")
            sr_no += 1
            dur = rng.uniform(*spec.seconds)
            rows.append({"Sr No.": sr_no, "Utterance": text, "Speaker": str(rng.choice(SPEAKERS)), "Emotion": label,
                         "Sentiment": SENTIMENT[label], "Dialogue_ID": dia, "Utterance_ID": utt,
                         "Season": int(rng.integers(1, 10)), "Episode": int(rng.integers(1, 25)),
                         "StartTime": _timestamp(clock, pad_hour=bool(rng.random() < 0.75)),
                         "EndTime": _timestamp(clock + dur, pad_hour=bool(rng.random() < 0.75))})
            clock += dur + 0.5
            utt += 2 if rng.random() < 0.05 else 1  # MELD's utterance ids have gaps
            bar.update(1)
        with open(root / csv_name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(rows)
        if split == "train" and spec.faults and len(rows) >= 3:
            _inject_faults(root / clip_dir, rows, spec)
    held = root / "heldout"
    held.mkdir(exist_ok=True)
    entries = []
    for i, label in enumerate(_labels(rng, spec.n_heldout)):
        text = generate_clip(rng, label, spec, held / f"clip{i}.mp4")
        entries.append({"video": f"clip{i}.mp4", "text": text, "label": label})
        bar.update(1)
    (held / "heldout.json").write_text(json.dumps(entries, indent=2))
    bar.close()
    (root / "README.md").write_text(
        "Synthetic MELD-shaped demo data written by `mmemo demo-data`; labels are learnable from each of "
        "text, audio and vision alone.\nThree train clips are broken on purpose (one missing, one corrupt, "
        "one without audio) to show the media report.\n")
    return root


def _inject_faults(clip_dir: Path, rows: list[dict], spec: DemoSpec) -> None:
    """Break three train clips the way real downloads break: missing, truncated, silent container."""
    missing, corrupt, no_audio = rows[0], rows[1], rows[2]
    name = lambda r: clip_dir / f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4"  # noqa: E731
    name(missing).unlink()
    data = name(corrupt).read_bytes()
    name(corrupt).write_bytes(b"\x00" * 64 + data[len(data) // 2:])
    rng = np.random.default_rng(spec.seed + 1)
    frames = make_frames(rng, no_audio["Emotion"], 12, spec.size)
    write_clip(name(no_audio), frames, None, spec.fps, spec.sample_rate)
