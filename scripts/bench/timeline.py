"""Timeline benchmark (issue 44): emotion over a long recording, and live streaming.

A generated recording (the demo's voice-like utterances, the emotion changing every minute, with a
transcript of ``start, end, speaker, text``) of 10 and of 60 minutes goes through ``predict_timeline``
(3-second windows every 1.5 s) with two models built from ``configs/demo.yaml``: its audio encoder alone
(the log-mel CNN), and text + audio reading the transcript (all-MiniLM-L6-v2, packaged). Each input runs in
a fresh process, so that its peak resident memory is its own. Speed is wall time as a multiple of real time
(audio seconds per second); the baseline beside it is the same recording only decoded (``AudioStream``), and
the memory of the 10-minute input is the baseline of the 60-minute one. Weights are random: speed and memory
do not depend on them. Streaming: the audio model fed 0.25-second chunks of the 10-minute recording;
latency is the time from the chunk that completes a window to its prediction (p50, p95).

Torch runs one thread (``--threads``). Goals on the 2-core CPU: at least 20x faster than real time for audio; peak memory of the 60-minute input
within 10% of the 10-minute one.

    python scripts/bench/timeline.py                       # 10 and 60 minutes, both models, streaming
    python scripts/bench/timeline.py --minutes 2 10        # a quicker check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import REPO, RESULTS, peak_rss_mb, write_json

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")


def make_recording(folder: Path, minutes: float) -> tuple[Path, Path]:
    """``minutes`` of speech whose emotion changes every minute, and its transcript (kept between runs)."""
    from mmemo.data.demo import write_recording

    wav, csv = folder / f"call_{minutes:g}min.wav", folder / f"call_{minutes:g}min.csv"
    if not wav.exists() or not csv.exists():
        plan = [(EMOTIONS[i % len(EMOTIONS)], 60.0) for i in range(int(np.ceil(minutes)))]
        plan[-1] = (plan[-1][0], 60.0 * (minutes - (len(plan) - 1)))
        write_recording(wav, plan, seed=0, transcript=csv)
    return wav, csv


def make_models(folder: Path) -> dict[str, Path]:
    """The demo config's audio model and its text + audio model, saved (random weights)."""
    from mmemo.config import load_config
    from mmemo.labels import get_label_set
    from mmemo.models.model import EmotionModel

    out = {}
    labels = get_label_set("meld7")
    for name, modalities in (("audio", ["audio"]), ("text+audio", ["text", "audio"])):
        path = folder / f"model_{name.replace('+', '_')}"
        if not (path / "model.safetensors").exists():
            config = load_config(REPO / "configs/demo.yaml", [f"model.modalities={modalities}"])
            EmotionModel(config.model, len(labels), seed=0).save_pretrained(path, config, labels)
        out[name] = path
    return out


def one(args: argparse.Namespace) -> None:
    """One measurement in this process (run by the parent in a fresh process): prints one JSON line."""
    from mmemo.data.audio_stream import AudioStream
    from mmemo.inference import EmotionRecognizer

    torch.set_num_threads(args.threads)
    result: dict = {}
    if args.one == "decode":
        start = time.perf_counter()
        samples = sum(len(b.samples) for b in AudioStream(args.recording, 16000))
        result = {"wall_s": time.perf_counter() - start, "audio_s": samples / 16000}
    elif args.one == "stream":
        import soundfile as sf

        rec = EmotionRecognizer.from_pretrained(args.model, device="cpu")
        stream = rec.stream(sample_rate=16000)
        chunk = int(0.25 * 16000)
        rows = 0
        with sf.SoundFile(args.recording) as f:
            while True:
                data = f.read(chunk, dtype="float32")
                if not len(data):
                    break
                rows += len(stream.feed(data))
        rows += len(stream.close())
        lat = np.array(stream.latencies) * 1000
        result = {"rows": rows, "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p95": float(np.percentile(lat, 95)),
                  "latency_ms_max": float(lat.max())}
    else:
        rec = EmotionRecognizer.from_pretrained(args.model, device="cpu")
        start = time.perf_counter()
        timeline = rec.predict_timeline(args.recording, window=3.0, hop=1.5, batch_size=args.batch_size,
                                        transcript=args.transcript, segments="vad" if args.one == "vad" else "fixed")
        wall = time.perf_counter() - start
        result = {"wall_s": wall, "audio_s": timeline.seconds, "rows": len(timeline), "warnings": timeline.warnings[:3]}
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def measure(kind: str, recording: Path, model: Path | None, transcript: Path | None, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--recording", str(recording), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size)]
    if model is not None:
        cmd += ["--model", str(model)]
    if transcript is not None:
        cmd += ["--transcript", str(transcript)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs=2, default=[10.0, 60.0], help="the short and the long input")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mmemo-bench-timeline"),
                        help="folder for the generated recordings and models (kept between runs)")
    # one thread: on the shared 2-core machine two threads ran the log-mel CNN 2.5x slower (spinning threads)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(RESULTS / "timeline.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--recording", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--transcript", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = make_models(work)
    recordings = {m: make_recording(work, m) for m in args.minutes}
    results: dict = {"decode": {}, "audio": {}, "text+audio": {}}
    for minutes, (wav, csv) in recordings.items():
        key = f"{minutes:g}"
        results["decode"][key] = measure("decode", wav, None, None, args)
        results["audio"][key] = measure("timeline", wav, models["audio"], None, args)
        results["text+audio"][key] = measure("timeline", wav, models["text+audio"], csv, args)
        for name in ("decode", "audio", "text+audio"):
            r = results[name][key]
            r["x_real_time"] = round(r["audio_s"] / r["wall_s"], 1)
            print(f"{key:>4} min  {name:<11} {r['wall_s']:8.1f} s  {r['x_real_time']:7.1f}x real time  "
                  f"peak {r['peak_rss_mb']:7.1f} MB", flush=True)
    short, long = (f"{m:g}" for m in args.minutes)
    results["stream"] = measure("stream", recordings[args.minutes[0]][0], models["audio"], None, args)
    vad = measure("vad", recordings[args.minutes[0]][0], models["audio"], None, args)  # silero-vad segments instead
    vad["x_real_time"] = round(vad["audio_s"] / vad["wall_s"], 1)
    results["audio, --segments vad"] = {short: vad}
    print()
    print(f"timeline (3 s windows every 1.5 s, batch {args.batch_size}, {args.threads} threads)")
    print(f"{'input':<12}{'model':<12}{'wall s':>9}{'x real time':>13}{'peak MB':>10}{'vs ' + short + ' min':>12}")
    for name in ("decode", "audio", "text+audio"):
        for key in (short, long):
            r = results[name][key]
            ratio = r["peak_rss_mb"] / results[name][short]["peak_rss_mb"]
            r["peak_vs_short"] = round(ratio, 3)
            print(f"{key + ' min':<12}{name:<12}{r['wall_s']:9.1f}{r['x_real_time']:13.1f}{r['peak_rss_mb']:10.1f}{ratio:12.3f}")
    print(f"{short + ' min':<12}{'audio, vad':<12}{vad['wall_s']:9.1f}{vad['x_real_time']:13.1f}{vad['peak_rss_mb']:10.1f}"
          f"   ({vad['rows']} speech segments)")
    s = results["stream"]
    print(f"streaming, audio model, 0.25 s chunks of the {short}-minute input: {s['rows']} windows, latency p50 "
          f"{s['latency_ms_p50']:.1f} ms, p95 {s['latency_ms_p95']:.1f} ms (max {s['latency_ms_max']:.1f})")
    a = results["audio"][long]
    print(f"goals: audio >= 20x real time: {a['x_real_time']}x; peak memory within 10% ({short} -> {long} min): "
          f"audio {results['audio'][long]['peak_vs_short']:.3f}, text+audio {results['text+audio'][long]['peak_vs_short']:.3f}")
    path = write_json(args.out, {"benchmark": "timeline", "minutes": args.minutes, "batch_size": args.batch_size,
                                 "window": 3.0, "hop": 1.5, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
