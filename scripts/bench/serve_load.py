"""Load on ``mmemo serve``: N concurrent clients on loopback against the demo model, and the same inputs through
one-by-one ``predict`` in the same run (the baseline).

Scenarios, each ``--seconds`` long with ``--clients`` clients that send a request as soon as their previous one
is answered:

- ``text``: text only (the demo's dev-set-like utterances);
- ``clip``: 3-second mp4 clips (h264 + AAC, a drawn face and a synthetic voice, as the demo data), uploaded;
- ``mix``: text, clips, text + clip, and 10% bad inputs (a corrupt clip, an unsupported format, empty text, a
  server path in the audio field), each of which must get a 4xx.

Reported: requests per second, p50/p95/p99 latency, answers by status, lost requests (no HTTP answer), the
server's peak memory (VmHWM), and the baselines: one-by-one ``predict`` throughput on the texts, ``predict``'s
latency on a clip against one client's latency through the server on the same clip (the server's overhead:
HTTP, upload, JSON, batching).

Goals on a 2-core CPU: no 5xx and no lost request under 16 clients for 60 s; text throughput >= 2x one-by-one
``predict``; server overhead <= 15% of ``predict``'s latency on a 3-second clip.

Usage: ``python scripts/bench/serve_load.py [--model runs/demo-...] [--clients 16 --seconds 60]`` (the default
model is the newest ``runs/demo-*``, which ``make demo`` trains).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, write_json

BAD_KINDS = ("corrupt clip", "unsupported format", "empty text", "server path")


def newest_demo_run() -> Path:
    runs = sorted((REPO / "runs").glob("demo-*/best/model.safetensors"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit("no runs/demo-*/best: train the demo model first (make demo), or pass --model")
    return runs[-1].parent.parent


def make_inputs(folder: Path, n_texts: int, n_clips: int, seconds: float) -> tuple[list[str], list[Path]]:
    from mmemo.data.demo import EMOTIONS, make_frames, make_text, make_voice, write_clip

    rng = np.random.default_rng(43)
    texts = [make_text(rng, EMOTIONS[i % len(EMOTIONS)]) for i in range(n_texts)]
    clips = []
    for i in range(n_clips):
        cue = EMOTIONS[i % len(EMOTIONS)]
        path = folder / f"clip{i}.mp4"
        write_clip(path, make_frames(rng, cue, int(seconds * 10), 112), make_voice(rng, cue, seconds, 16000))
        clips.append(path)
    return texts, clips


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    log = tempfile.NamedTemporaryFile("w", prefix="serve-load-server-", suffix=".log", delete=False)  # kept for a look
    proc = subprocess.Popen([sys.executable, "-m", "mmemo", "serve", str(model), "--port", str(port), *extra],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mmemo serve exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("mmemo serve did not start in 180 s")


def peak_memory_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Requests:
    """The request of each scenario, by index: (kind, expected status class, httpx keyword arguments)."""

    def __init__(self, texts: list[str], clips: list[Path], folder: Path):
        self.texts = texts
        self.clips = [p.read_bytes() for p in clips]
        self.corrupt = b"\0\0\0\x18ftypmp42" + os.urandom(20000)
        self.secret = str(folder / "clip0.mp4")  # a real file on the server: must never be read

    def text(self, i: int) -> tuple[str, int, dict]:
        return "text", 200, {"json": {"text": self.texts[i % len(self.texts)]}}

    def clip(self, i: int) -> tuple[str, int, dict]:
        return "clip", 200, {"files": {"video": (f"clip{i % len(self.clips)}.mp4", self.clips[i % len(self.clips)],
                                                 "video/mp4")}}

    def mix(self, i: int) -> tuple[str, int, dict]:
        r = (i * 7919) % 100  # a fixed interleaving: 10 of every 100 requests are bad
        if r < 10:
            kind = BAD_KINDS[r % len(BAD_KINDS)]
            payload = {
                "corrupt clip": {"files": {"video": ("broken.mp4", self.corrupt, "video/mp4")}},
                "unsupported format": {"files": {"audio": ("notes.txt", b"just some notes", "text/plain")}},
                "empty text": {"json": {"text": ""}},
                "server path": {"data": {"audio": self.secret}},
            }[kind]
            return kind, 400, payload
        if r < 50:
            return self.text(i)
        if r < 80:
            return self.clip(i)
        _, _, clip = self.clip(i)
        return "text+clip", 200, {"data": {"text": self.texts[i % len(self.texts)]}, **clip}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def load(url: str, make, clients: int, seconds: float) -> dict:
    """``clients`` closed-loop clients for ``seconds``; every request is counted: answered by status, or lost."""
    import httpx

    latencies, statuses, unexpected, lost = [], {}, [], []
    counter = iter(range(10**9))
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one_client() -> None:
            while time.perf_counter() < stop:
                i = next(counter)
                kind, expected, kwargs = make(i)
                start = time.perf_counter()
                try:
                    resp = await client.post("/predict", **kwargs)
                except httpx.HTTPError as exc:
                    lost.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                ok = resp.status_code == 200 if expected == 200 else 400 <= resp.status_code < 500
                body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                if ok and expected != 200 and not (body.get("reason") and "field" in body):
                    ok = False  # a refusal must say which field and why
                if not ok:
                    unexpected.append(f"{kind}: {resp.status_code} {resp.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    answered = len(latencies)
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": answered + len(lost), "answered": answered,
            "rps": round(answered / elapsed, 2), "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 1), "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "5xx": sum(v for k, v in statuses.items() if k >= 500), "lost": len(lost),
            "unexpected": len(unexpected), "examples": (unexpected + lost)[:5]}


def sequential_latency(url: str, make, n: int) -> list[float]:
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n):
            _, _, kwargs = make(i)
            start = time.perf_counter()
            resp = client.post("/predict", **kwargs)
            out.append(time.perf_counter() - start)
            assert resp.status_code == 200, resp.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="run folder or saved model (default: the newest runs/demo-*)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scenarios", default="text,clip,mix")
    parser.add_argument("--clip-seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=40, help="sequential requests and predict calls on a clip")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, in the server (--threads) and in the baseline alike")
    parser.add_argument("--server-args", default="", help="extra `mmemo serve` options, e.g. '--max-wait-ms 2'")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()

    import torch

    from mmemo import EmotionRecognizer

    torch.set_num_threads(args.threads)

    model = args.model or newest_demo_run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        texts, clips = make_inputs(Path(tmp), 64, 8, args.clip_seconds)
        requests = Requests(texts, clips, Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"model {model}; server at {url}; {args.clients} clients x {args.seconds:g} s per scenario; "
              f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}", flush=True)
        server_args = ["--threads", str(args.threads), *args.server_args.split()]
        server = start_server(model, port, server_args)
        results: dict = {"model": str(model), "server_args": " ".join(server_args), "scenarios": {}}
        recognizer = EmotionRecognizer.from_pretrained(model)  # the baseline, in this process
        try:
            sequential_latency(url, requests.clip, 3)  # warm-up: first calls load kernels and caches
            asyncio.run(load(url, requests.text, args.clients, 3))
            for clip in clips[:2]:
                recognizer.predict(video=str(clip))
            recognizer.predict(text=texts[0])
            for name in [n for n in args.scenarios.split(",") if n]:
                make = getattr(requests, name)
                res = asyncio.run(load(url, make, args.clients, args.seconds))
                results["scenarios"][name] = res
                print(f"{name:<5} {json.dumps(res)}", flush=True)
                if name == "text":  # the baseline right after, while the server idles: one predict() at a time
                    start, n_text = time.perf_counter(), 0
                    while time.perf_counter() - start < min(args.seconds, 20) or n_text < len(texts):
                        recognizer.predict(text=texts[n_text % len(texts)])
                        n_text += 1
                    text_rps = n_text / (time.perf_counter() - start)
            # One client against predict() on the same clips, turn by turn, so that both see the same machine.
            served_clip, predict_clip = [], []
            for i in range(args.repeats):
                served_clip += sequential_latency(url, lambda _, i=i: requests.clip(i), 1)
                t = time.perf_counter()
                recognizer.predict(video=str(clips[i % len(clips)]))
                predict_clip.append(time.perf_counter() - t)
            served_text = sequential_latency(url, requests.text, args.repeats)
            results["server_peak_memory_mb"] = peak_memory_mb(server.pid)
            results["server_log"] = server.log_path
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    med = statistics.median
    results["baseline"] = {"predict_text_rps": round(text_rps, 2) if "text" in results["scenarios"] else None,
                           "predict_clip_p50_ms": round(med(predict_clip) * 1000, 1),
                           "server_clip_p50_ms": round(med(served_clip) * 1000, 1),
                           "server_text_p50_ms": round(med(served_text) * 1000, 1)}
    b = results["baseline"]
    overhead = (b["server_clip_p50_ms"] - b["predict_clip_p50_ms"]) / b["predict_clip_p50_ms"]
    text = results["scenarios"].get("text")
    results["goals"] = {
        "no_5xx_no_lost": all(s["5xx"] == 0 and s["lost"] == 0 for s in results["scenarios"].values()),
        "bad_inputs_all_4xx": all(s["unexpected"] == 0 for s in results["scenarios"].values()),
        "text_throughput_ratio": round(text["rps"] / text_rps, 2) if text else None,
        "clip_overhead": round(overhead, 3),
    }
    print()
    print("| scenario | clients × s | requests | req/s | p50 ms | p95 ms | p99 ms | statuses | 5xx | lost |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in results["scenarios"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
        print(f"| {name} | {s['clients']} × {s['seconds']:g} | {s['requests']} | {s['rps']:.1f} | {s['p50_ms']:.0f} | "
              f"{s['p95_ms']:.0f} | {s['p99_ms']:.0f} | {statuses} | {s['5xx']} | {s['lost']} |")
    g = results["goals"]
    if text:
        print(f"\none-by-one predict, text: {b['predict_text_rps']:.1f} inputs/s; through the server, {args.clients} "
              f"clients: {text['rps']:.1f} requests/s -> {g['text_throughput_ratio']}x (goal >= 2)")
    print(f"3-second clip, one client: predict p50 {b['predict_clip_p50_ms']:.1f} ms, through the server "
          f"{b['server_clip_p50_ms']:.1f} ms -> overhead {overhead * 100:.1f}% (goal <= 15%)")
    print(f"server peak memory (VmHWM): {results['server_peak_memory_mb']} MB; no 5xx and no lost request: "
          f"{g['no_5xx_no_lost']}; every bad input a 4xx with field and reason: {g['bad_inputs_all_4xx']}")
    print(f"results: {write_json(args.out, results)}")


if __name__ == "__main__":
    main()
