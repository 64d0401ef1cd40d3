"""Fusion methods side by side: parameter count and CPU forward+backward time for one fixed batch.

    python scripts/bench/fusion.py                      # every registered fusion, default configs
    python scripts/bench/fusion.py --dim 128 --threads 2 --missing 0.3

The batch is synthetic but shaped like real encoder outputs (MiniLM text tokens, log-mel CNN audio
frames, ResNet-18 video frames, with random lengths). Each method runs fusion + the shared head +
backward; repeats are interleaved across methods so load on a shared machine hits all of them alike.
The ratio to ``concat``, measured in the same run, uses the fastest repeat (as ``timeit`` advises:
slower repeats measure the other processes on the machine); the median is shown beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mmemo.config import from_dict
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.registry import FUSIONS, create_fusion

SHAPES = {"text": (32, 384), "audio": (100, 128), "vision": (8, 512)}  # (tokens, width) per modality


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fusions", nargs="*", help="default: every registered fusion")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256, help="model.fusion.dim for every method")
    parser.add_argument("--missing", type=float, default=0.0, help="probability that a modality is absent")
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = args.fusions or FUSIONS.names()
    if "concat" not in names:
        names = ["concat", *names]
    embeddings, present = synthetic_batch(args.batch_size, args.missing, seed=0)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=torch.Generator().manual_seed(1))
    models = {}
    for name in names:
        torch.manual_seed(0)
        config = from_dict(FUSIONS.get(name).config_class, {"name": name, "dim": args.dim}, "fusion")
        fusion = create_fusion(config, input_dims={m: w for m, (_, w) in SHAPES.items()}, modalities=list(SHAPES))
        models[name] = nn.ModuleDict({"fusion": fusion, "head": nn.Linear(fusion.dim, args.classes)}).train()

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

    best = {name: min(ts) for name, ts in times.items()}
    shape = ", ".join(f"{m} {t}x{w}" for m, (t, w) in SHAPES.items())
    print(f"batch {args.batch_size} ({shape}), dim {args.dim}, {args.classes} classes, missing {args.missing}, "
          f"{args.threads} thread(s), {args.repeats} forward+backward steps each")
    print(f"{'fusion':<16} {'parameters':>12} {'ms/batch':>9} {'median ms':>10} {'vs concat':>10}")
    for name in names:
        params = sum(p.numel() for p in models[name]["fusion"].parameters())
        print(f"{name:<16} {params:>12,} {best[name] * 1e3:>9.2f} {statistics.median(times[name]) * 1e3:>10.2f} "
              f"{best[name] / best['concat']:>9.2f}x")


if __name__ == "__main__":
    main()
