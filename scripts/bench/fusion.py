"""Fusion methods side by side: parameter count, CPU training-step time and (``mmsa-mosi``) peak memory.

    python scripts/bench/fusion.py                      # every registered fusion, default configs
    python scripts/bench/fusion.py --dim 128 --threads 2 --missing 0.3
    python scripts/bench/fusion.py --fusions cross_attention bottleneck --profile   # which kernel runs
    PYTHONPATH=/tmp/mmsa python scripts/bench/fusion.py --workload mmsa-mosi --mmsa

``demo`` (the default): a synthetic batch shaped like real encoder outputs (MiniLM text tokens, log-mel
CNN audio frames, ResNet-18 video frames, with random lengths). Each method runs fusion + the shared
head + backward; repeats are interleaved across methods so load on a shared machine hits all of them
alike. The ratio to ``concat``, measured in the same run, uses the fastest repeat (as ``timeit``
advises: slower repeats measure the other processes on the machine); the median is shown beside it.
The sequence fusions also run as they were before issue 47 (``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer`` on padded batches, kept below as the baseline), with the same weights.

``mmsa-mosi``: MMSA's MOSI workload for MulT (Tsai et al., 2019): batch 16, text 50x768, audio 375x5,
vision 500x20, each example's real length drawn uniformly from a quarter to three quarters of the
padded length (about half, as in MMSA's unaligned MOSI features, zero padding at the end); width 50,
10 heads, 4 cross-modal layers per direction, 3 self-attention layers; a 1-output head, L1 loss, Adam.
Every sequence fusion (and its baseline) runs in its own child process, so each peak RSS (the whole
process: Python, torch, the batch) is its own. ``--mmsa`` adds MMSA 2.2.1's own ``MulT`` (when
``import MMSA`` works, e.g. ``pip install --target /tmp/mmsa --no-deps mmsa==2.2.1 easydict pandas``,
then ``PYTHONPATH=/tmp/mmsa``) on the same 16 examples, read by MMSA's own data loader from a pickle
of MOSI's layout that this script writes from random numbers; its step is its trainer's (L1, Adam,
``clip_grad_value_``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmemo.config import from_dict
from mmemo.models.encoders.base import ModalityEmbedding, masked_mean
from mmemo.models.fusion.base import Fusion
from mmemo.models.fusion.bottleneck import BottleneckConfig, present_mean
from mmemo.models.fusion.cross_attention import CrossAttentionConfig
from mmemo.models.fusion.sequence import sinusoidal_positions
from mmemo.registry import FUSIONS, create_fusion

SHAPES = {"text": (32, 384), "audio": (100, 128), "vision": (8, 512)}  # (tokens, width) per modality
MOSI = {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)}  # MMSA's unaligned MOSI features
MOSI_FUSIONS = {  # MulT's sizes in MMSA's MOSI config (dst_feature_dim_nheads [50, 10], nlevels 4)
    "cross_attention": {"dim": 50, "heads": 10, "layers": 4, "self_layers": 3},
    "bottleneck": {"dim": 50, "heads": 10, "layers": 4},
}
BASELINE = " (before #47)"


# --------------------------------------------------------------------------------------------------
# The baseline: the sequence fusions as they were before issue 47 (mmemo commit 75bd736), same
# parameters and names. Padded batches, nn.MultiheadAttention and nn.TransformerEncoderLayer, whose
# attention-weight dropout sends training to PyTorch's math kernel (every attention matrix is kept).
# --------------------------------------------------------------------------------------------------


class PaddedTokenProjection(nn.Module):
    def __init__(self, in_dim: int, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.proj(seq)
        return self.dropout(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype))


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    empty = ~valid.any(1)
    keep_first = torch.zeros_like(valid)
    keep_first[:, 0] = empty
    return ~(valid | keep_first)


def transformer_layer(dim: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
                                      batch_first=True, norm_first=True)


class PaddedCrossModalLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_target = nn.LayerNorm(dim)
        self.norm_source = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, source: torch.Tensor, source_valid: torch.Tensor) -> torch.Tensor:
        source = self.norm_source(source)
        attended, _ = self.attn(self.norm_target(target), source, source,
                                key_padding_mask=key_padding_mask(source_valid), need_weights=False)
        has_source = source_valid.any(1)[:, None, None]
        target = target + torch.where(has_source, self.dropout(attended), 0.0)
        return target + self.dropout(self.ff(self.norm_ff(target)))


class BaselineCrossAttention(Fusion):
    def __init__(self, config: CrossAttentionConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d, p = config.dim, config.dropout
        self.tokens = nn.ModuleDict({m: PaddedTokenProjection(input_dims[m], d, p) for m in modalities})
        self.cross = nn.ModuleDict({
            f"{s}_to_{t}": nn.ModuleList(PaddedCrossModalLayer(d, config.heads, p) for _ in range(config.layers))
            for t in modalities for s in modalities if s != t
        })
        sources = len(modalities) - 1
        self.merge = nn.ModuleDict({t: nn.Linear(sources * d, d) if sources > 1 else nn.Identity() for t in modalities})
        self.self_attn = nn.ModuleDict({
            t: nn.ModuleList(transformer_layer(d, config.heads, p) for _ in range(config.self_layers)) for t in modalities
        })
        self.norm = nn.ModuleDict({t: nn.LayerNorm(d) for t in modalities})
        self.missing = nn.ParameterDict({t: nn.Parameter(torch.zeros(d)) for t in modalities})
        self.out = nn.Sequential(nn.Linear(d * len(modalities), d), nn.GELU(), nn.Dropout(p))

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        tokens = {m: self.tokens[m](embeddings[m].seq) for m in self.modalities}
        valid = {m: embeddings[m].mask for m in self.modalities}
        pooled = []
        for t in self.modalities:
            streams = []
            for s in self.modalities:
                if s == t:
                    continue
                z = tokens[t]
                for layer in self.cross[f"{s}_to_{t}"]:
                    z = layer(z, tokens[s], valid[s])
                streams.append(z)
            z = self.merge[t](torch.cat(streams, dim=-1)) if streams else tokens[t]
            ignore = key_padding_mask(valid[t])
            for layer in self.self_attn[t]:
                z = layer(z, src_key_padding_mask=ignore)
            h = masked_mean(self.norm[t](z), valid[t])
            pooled.append(self.or_missing(h, present, t))
        return self.out(torch.cat(pooled, dim=-1))


class BaselineBottleneck(Fusion):
    def __init__(self, config: BottleneckConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d, p = config.dim, config.dropout
        self.tokens = nn.ModuleDict({m: PaddedTokenProjection(input_dims[m], d, p) for m in modalities})
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, d) * 0.02) for m in modalities})
        self.bottleneck = nn.Parameter(torch.randn(1, config.bottleneck_tokens, d) * 0.02)
        self.layers = nn.ModuleDict({
            m: nn.ModuleList(transformer_layer(d, config.heads, p) for _ in range(config.layers)) for m in modalities
        })
        self.norm = nn.LayerNorm(d)

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        batch = present.shape[0]
        streams, ignore = {}, {}
        for m in self.modalities:
            tokens = self.tokens[m](embeddings[m].seq)
            streams[m] = torch.cat([self.cls[m].to(tokens.dtype).expand(batch, -1, -1), tokens], dim=1)
            ignore[m] = ~torch.cat([embeddings[m].mask.new_ones(batch, 1), embeddings[m].mask], dim=1)
        shared = self.bottleneck.expand(batch, -1, -1)
        n = shared.shape[1]
        for i in range(self.config.layers):
            if i < self.config.fusion_layer:
                for m in self.modalities:
                    streams[m] = self.layers[m][i](streams[m], src_key_padding_mask=ignore[m])
                continue
            copies = []
            for m in self.modalities:
                x = torch.cat([streams[m], shared.to(streams[m].dtype)], dim=1)
                x = self.layers[m][i](x, src_key_padding_mask=torch.cat([ignore[m], ignore[m].new_zeros(batch, n)], 1))
                streams[m], copy = x[:, :-n], x[:, -n:]
                copies.append(copy)
            shared = present_mean(torch.stack(copies, dim=1), present)
        cls = torch.stack([streams[m][:, 0] for m in self.modalities], dim=1)
        return self.norm(present_mean(cls, present))


BASELINES = {"cross_attention": BaselineCrossAttention, "bottleneck": BaselineBottleneck}


def build_fusion(name: str, fields: dict, input_dims: dict[str, int]) -> Fusion:
    """A registered fusion, or with the ``BASELINE`` suffix its pre-#47 version; same seed, same weights."""
    base = name.removesuffix(BASELINE)
    config = from_dict(FUSIONS.get(base).config_class, {"name": base, **fields}, "fusion")
    torch.manual_seed(0)
    if name.endswith(BASELINE):
        return BASELINES[base](config, input_dims, list(input_dims))
    return create_fusion(config, input_dims=input_dims, modalities=list(input_dims))


PROFILE_GROUPS = {  # what one training step spends its time on, by ATen operator (self CPU time)
    "linear layers": ("aten::mm", "aten::addmm"),
    "attention": ("aten::bmm", "aten::_softmax", "aten::_softmax_backward_data", "aten::_safe_softmax",
                  "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "dropout masks (RNG)": ("aten::bernoulli_",),
}


def profile_step(name: str, step: Callable[[], object]) -> str:
    """One step under the profiler: which attention kernel ran, and the time per group of operators."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    self_us: dict[str, float] = {}
    for event in prof.key_averages():
        self_us[event.key] = self_us.get(event.key, 0.0) + event.self_cpu_time_total
    total = sum(self_us.values())
    kernels = sorted(k for k in self_us if k.startswith("aten::_scaled_dot_product"))
    shares = {group: sum(self_us.get(op, 0.0) for op in ops) for group, ops in PROFILE_GROUPS.items()}
    shares["everything else"] = total - sum(shares.values())
    parts = ", ".join(f"{group} {us / 1e3:.0f} ms ({us / total:.0%})" for group, us in shares.items())
    return f"{name}: attention kernels {kernels or ['none']}; {parts}"


# --------------------------------------------------------------------------------------------------
# demo workload: every fusion in one process, interleaved
# --------------------------------------------------------------------------------------------------


def synthetic_batch(batch: int, missing: float, seed: int) -> tuple[dict[str, ModalityEmbedding], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    embeddings = {}
    for m, (length, width) in SHAPES.items():
        lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
        mask = torch.arange(length)[None, :] < lengths[:, None]
        seq = torch.randn(batch, length, width, generator=gen) * mask[..., None]
        embeddings[m] = ModalityEmbedding(seq, mask, seq.sum(1) / lengths[:, None])
    present = torch.rand(batch, len(SHAPES), generator=gen) >= missing
    present[torch.arange(batch), torch.randint(0, len(SHAPES), (batch,), generator=gen)] = True  # never empty
    return embeddings, present


def demo(args: argparse.Namespace) -> None:
    names = args.fusions or FUSIONS.names()
    if "concat" not in names:
        names = ["concat", *names]
    names = [n for name in names for n in ([name, name + BASELINE] if name in BASELINES else [name])]
    embeddings, present = synthetic_batch(args.batch_size, args.missing, seed=0)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=torch.Generator().manual_seed(1))
    input_dims = {m: w for m, (_, w) in SHAPES.items()}
    models = {}
    for name in names:
        fusion = build_fusion(name, {"dim": args.dim}, input_dims)
        torch.manual_seed(1)
        models[name] = nn.ModuleDict({"fusion": fusion, "head": nn.Linear(fusion.dim, args.classes)}).train()
    for name in BASELINES:  # same weights in both: the outputs must agree (dropout off, eval mode)
        if name in models:
            models[name + BASELINE].load_state_dict(models[name].state_dict())
            with torch.no_grad():
                new, old = (models[n].eval()["fusion"](embeddings, present) for n in (name, name + BASELINE))
            print(f"{name}: max |new - before #47| on the same weights, eval: {(new - old).abs().max().item():.2e}")
            models[name].train(), models[name + BASELINE].train()

    def step(model: nn.ModuleDict) -> float:
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model["head"](model["fusion"](embeddings, present)), labels)
        model.zero_grad(set_to_none=True)
        loss.backward()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.repeats):
        for name in names:
            elapsed = step(models[name])
            if i >= args.warmup:
                times[name].append(elapsed)

    if args.profile:
        for name in names:
            if name.removesuffix(BASELINE) in BASELINES:
                print(profile_step(name, lambda name=name: step(models[name])))

    best = {name: min(ts) for name, ts in times.items()}
    shape = ", ".join(f"{m} {t}x{w}" for m, (t, w) in SHAPES.items())
    print(f"batch {args.batch_size} ({shape}), dim {args.dim}, {args.classes} classes, missing {args.missing}, "
          f"{args.threads} thread(s), {args.repeats} forward+backward steps each")
    print(f"{'fusion':<30} {'parameters':>12} {'ms/batch':>9} {'median ms':>10} {'vs concat':>10} {'vs before':>10}")
    for name in names:
        params = sum(p.numel() for p in models[name]["fusion"].parameters())
        before = f"{best[name + BASELINE] / best[name]:.2f}x faster" if name in BASELINES else ""
        print(f"{name:<30} {params:>12,} {best[name] * 1e3:>9.2f} {statistics.median(times[name]) * 1e3:>10.2f} "
              f"{best[name] / best['concat']:>9.2f}x {before:>10}")


# --------------------------------------------------------------------------------------------------
# mmsa-mosi workload: one child process per model, each reporting its step times and peak RSS
# --------------------------------------------------------------------------------------------------


def mosi_features(examples: int, seed: int) -> dict:
    """One split of MMSA's MOSI pickle layout, from random numbers: features zero-padded at the end."""
    rng = np.random.default_rng(seed)
    split: dict = {"id": [f"clip{i}" for i in range(examples)], "raw_text": ["random"] * examples}
    for m, (length, width) in MOSI.items():
        lengths = rng.integers(length // 4, 3 * length // 4 + 1, examples)
        valid = np.arange(length)[None, :] < lengths[:, None]
        split[m] = (rng.standard_normal((examples, length, width)) * valid[..., None]).astype(np.float32)
        if m == "text":  # what MMSA's BERT path reads: token ids, attention mask, segment ids
            ids = rng.integers(1000, 30000, (examples, length)) * valid
            split["text_bert"] = np.stack([ids, valid, np.zeros_like(ids)], 1).astype(np.float32)
        else:
            split[f"{m}_lengths"] = lengths.tolist()
    split["regression_labels"] = rng.uniform(-3, 3, examples).astype(np.float32)
    split["classification_labels"] = np.digitize(split["regression_labels"], [-0.5, 0.5]).astype(np.float32)
    return split


def child_mmemo(name: str, data: dict, args: argparse.Namespace) -> tuple[nn.Module, Callable[[], None]]:
    train = data["train"]
    valid = {"text": torch.from_numpy(train["text_bert"][:, 1] > 0)}
    for m in ("audio", "vision"):
        valid[m] = torch.arange(MOSI[m][0])[None, :] < torch.tensor(train[f"{m}_lengths"])[:, None]
    embeddings = {}
    for m in MOSI:
        seq = torch.from_numpy(train[m])
        embeddings[m] = ModalityEmbedding(seq, valid[m], masked_mean(seq, valid[m]))
    present = torch.ones(len(seq), len(MOSI), dtype=torch.bool)
    labels = torch.from_numpy(train["regression_labels"]).view(-1, 1)
    fusion = build_fusion(name, {**MOSI_FUSIONS[name.removesuffix(BASELINE)], **args.fusion_fields},
                          {m: w for m, (_, w) in MOSI.items()})
    model = nn.ModuleDict({"fusion": fusion, "head": nn.Linear(fusion.dim, 1)}).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step() -> None:
        optimizer.zero_grad()
        loss = nn.functional.l1_loss(model["head"](model["fusion"](embeddings, present)), labels)
        loss.backward()
        optimizer.step()

    return model, step


def child_mmsa(path: Path) -> tuple[nn.Module, Callable[[], None]]:
    from MMSA.config import get_config_regression  # optional, only in this child
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO

    config = get_config_regression("mult", "mosi")
    config.update(featurePath=str(path), custom_feature=None, feature_T=None, feature_A=None, feature_V=None,
                  device=torch.device("cpu"), train_mode="regression")
    batch = next(iter(MMDataLoader(config, num_workers=0)["train"]))  # the 16 train examples, shuffled
    model = AMIO(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    criterion = nn.L1Loss()

    def step() -> None:  # MMSA's trainer (trains/singleTask/MULT.py), one update per batch
        optimizer.zero_grad()
        loss = criterion(model(batch["text"], batch["audio"], batch["vision"])["M"], batch["labels"]["M"].view(-1, 1))
        loss.backward()
        nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        optimizer.step()

    return model, step


def peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM, which, unlike ``ru_maxrss``, does not
    inherit the parent's size through fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args: argparse.Namespace) -> None:
    """Time one model's training step on the pickled batch; print a JSON line."""
    torch.set_num_threads(args.threads)
    path = Path(args.data)
    if args.child == "idle":  # the process without any model: Python, torch, the batch
        pickle.loads(path.read_bytes())
        print(json.dumps({"peak_rss": peak_rss()}))
        return
    if args.child == "MMSA MulT":
        model, step = child_mmsa(path)
    else:
        model, step = child_mmemo(args.child, pickle.loads(path.read_bytes()), args)
    times = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "params": sum(p.numel() for p in model.parameters()),
                      "peak_rss": peak_rss()}))


def mmsa_importable() -> bool:
    if importlib.util.find_spec("MMSA") is None:
        print("--mmsa: MMSA is not importable; see this script's docstring", file=sys.stderr)
        return False
    return True


def mmsa_mosi(args: argparse.Namespace) -> None:
    names = args.fusions or list(MOSI_FUSIONS)
    names = [n for name in names for n in ([name] if args.no_baseline else [name, name + BASELINE])]
    if args.mmsa and mmsa_importable():
        names = ["MMSA MulT", *names]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unaligned_50.pkl"
        split = mosi_features(args.batch_size, seed=0)
        path.write_bytes(pickle.dumps({"train": split, "valid": split, "test": split}))
        results = {}
        for name in ["idle", *names]:
            command = [sys.executable, __file__, "--child", name, "--data", str(path), "--threads", str(args.threads),
                       "--warmup", str(args.warmup), "--repeats", str(args.repeats),
                       "--fusion-fields", json.dumps(args.fusion_fields)]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode:
                print(f"{name}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
    shape = ", ".join(f"{m} {t}x{w}" for m, (t, w) in MOSI.items())
    print(f"MMSA MOSI workload: batch {args.batch_size} ({shape}, real lengths 1/4-3/4 of each), width 50, "
          f"10 heads, {args.threads} thread(s); median of {args.repeats} training steps after {args.warmup} warm-up; "
          f"peak RSS of each model's own process")
    if args.fusion_fields:
        print(f"fusion fields: {args.fusion_fields}")
    print(f"{'model':<30} {'parameters':>11} {'step s':>8} {'min s':>8} {'peak RSS GB':>12} {'vs MMSA':>8}")
    if "idle" in results:
        print(f"{'(no model: Python, torch, batch)':<30} {'':>11} {'':>8} {'':>8} {results['idle']['peak_rss'] / 1e9:>12.2f}")
    mmsa = results.get("MMSA MulT")
    for name in names:
        if name not in results:
            continue
        r = results[name]
        median = statistics.median(r["times"])
        ratio = f"{median / statistics.median(mmsa['times']):.2f}x" if mmsa else ""
        print(f"{name:<30} {r['params']:>11,} {median:>8.2f} {min(r['times']):>8.2f} {r['peak_rss'] / 1e9:>12.2f} {ratio:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["demo", "mmsa-mosi"], default="demo")
    parser.add_argument("--fusions", nargs="*", help="default: every registered fusion (mmsa-mosi: the sequence ones)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256, help="demo: model.fusion.dim for every method")
    parser.add_argument("--missing", type=float, default=0.0, help="demo: probability that a modality is absent")
    parser.add_argument("--classes", type=int, default=7, help="demo: number of classes")
    parser.add_argument("--repeats", type=int, help="timed steps per model (demo: 20, mmsa-mosi: 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (demo: 3, mmsa-mosi: 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true",
                        help="demo: profile one step of each sequence fusion (kernels, time per operator group)")
    parser.add_argument("--mmsa", action="store_true", help="mmsa-mosi: also time MMSA 2.2.1's own MulT")
    parser.add_argument("--no-baseline", action="store_true", help="mmsa-mosi: skip the pre-#47 versions (slow)")
    parser.add_argument("--fusion-fields", type=json.loads, default={},
                        help='mmsa-mosi: extra fusion config fields as JSON, e.g. \'{"checkpoint_layers": true}\'')
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    long = args.workload == "mmsa-mosi" or args.child
    args.repeats = args.repeats if args.repeats is not None else (3 if long else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if long else 3)
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
    elif args.workload == "mmsa-mosi":
        mmsa_mosi(args)
    else:
        demo(args)


if __name__ == "__main__":
    main()
