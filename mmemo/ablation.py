"""Ablation runs: every modality combination x fusion method x seed from one config, and the table a paper needs.

One folder holds the sweep::

    ablation.yaml     the base config as resolved (a restart must use the same one)
    results.csv       one row per run: modalities, fusion, seed, status, dev_* and test_* metrics, epochs, time
    results.md        mean ± std over seeds per modalities x fusion cell; the best fusion per combination,
                      selected on dev, in bold, and test reported for that dev-selected configuration
    results.png       the same as bars with error bars (dev and test)
    runs/<cell>/      each run's own run folder (metrics.jsonl, best/, eval_*.json, ...)

It is resumable: a restart skips finished runs, continues an interrupted one from its last checkpoint and
retries failed ones. A failed run is recorded with its error (and ``runs/<cell>/error.txt``); the sweep goes on.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import shutil
import statistics
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmemo.config import MODALITIES, Config, ConfigError, build_config, load_config
from mmemo.registry import FUSIONS
from mmemo.training.trainer import last_checkpoint, train

log = logging.getLogger("mmemo")

METRICS = ("weighted_f1", "macro_f1", "accuracy", "uar")
COLUMNS = ["modalities", "fusion", "seed", "status", *[f"dev_{m}" for m in METRICS], *[f"test_{m}" for m in METRICS],
           "best_epoch", "epochs", "time_s", "run_dir", "error"]


@dataclass(frozen=True)
class AblationRun:
    modalities: tuple[str, ...]
    fusion: str
    seed: int

    @property
    def combo(self) -> str:
        return "+".join(self.modalities)

    @property
    def name(self) -> str:
        return f"{'_'.join(self.modalities)}-{self.fusion}-seed{self.seed}"

    def key(self) -> tuple[str, str, int]:
        return self.combo, self.fusion, self.seed


def modality_combinations(spec: str | Sequence[str], available: Sequence[str]) -> list[tuple[str, ...]]:
    """``all``: every non-empty subset of ``available`` (7 for text, audio, vision), smallest first; or a
    list such as ``text,audio,text+audio`` (``+`` joins the modalities of one combination)."""
    order = [m for m in MODALITIES if m in available]
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    if list(spec) == ["all"]:
        return [c for r in range(1, len(order) + 1) for c in itertools.combinations(order, r)]
    combos = []
    for item in spec:
        mods = [m.strip() for m in item.split("+") if m.strip()]
        unknown = [m for m in mods if m not in MODALITIES]
        if not mods or unknown:
            raise ConfigError(f"--modalities: '{item}' is not a combination of {', '.join(MODALITIES)} (e.g. text+audio)")
        combo = tuple(m for m in MODALITIES if m in mods)
        if combo not in combos:
            combos.append(combo)
    return combos


def run_config(base: Config, run: AblationRun, out_dir: Path) -> Config:
    """The base config with this run's modalities, fusion (keeping the base's dim, dropout and modality
    dropout) and seed; it writes its run folder under the sweep's folder."""
    data = base.to_dict()
    data["name"] = f"{base.name}-{run.name}"
    data["output_dir"] = str(out_dir / "runs")
    data["model"]["modalities"] = list(run.modalities)
    fusion = data["model"]["fusion"]
    if fusion["name"] != run.fusion:
        data["model"]["fusion"] = {"name": run.fusion, **{k: fusion[k] for k in ("dim", "dropout", "modality_dropout")}}
    data["train"]["seed"] = run.seed
    return build_config(data)


def _cell(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(mean_std: tuple[float, float] | None, n: int, bold: bool = False) -> str:
    if mean_std is None:
        return "–"
    text = f"{mean_std[0]:.2f} ± {mean_std[1]:.2f}" if n > 1 else f"{mean_std[0]:.2f}"
    return f"**{text}**" if bold else text


class Ablation:
    """A sweep over ``runs`` of ``base`` into ``out_dir``; ``run()`` does what is not done yet."""

    def __init__(self, base: Config, out_dir: str | Path, runs: list[AblationRun]):
        self.base, self.out_dir, self.runs = base, Path(out_dir), runs
        self.metric = base.train.metric
        self.rows: dict[tuple[str, str, int], dict[str, Any]] = {}

    # -- bookkeeping --------------------------------------------------------------------------------

    def _check_folder(self) -> None:
        saved = self.out_dir / "ablation.yaml"
        current = self.base.to_dict()
        if saved.exists():
            before = yaml.safe_load(saved.read_text())
            if before != current:
                changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
                raise ConfigError(f"{self.out_dir} holds a sweep of another config (differs in: {', '.join(changed)}); "
                                  "use another output folder or the same config and overrides")
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.base.save(saved)

    def _load_rows(self) -> None:
        path = self.out_dir / "results.csv"
        if path.exists():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    self.rows[(row["modalities"], row["fusion"], int(row["seed"]))] = row

    def _write_rows(self) -> None:
        order = {run.key(): i for i, run in enumerate(self.runs)}
        rows = sorted(self.rows.values(), key=lambda r: order.get((r["modalities"], r["fusion"], int(r["seed"])), 10**9))
        tmp = self.out_dir / ".results.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.out_dir / "results.csv")

    # -- running ------------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        from accelerate import PartialState

        main = PartialState().is_main_process
        if main:
            self._check_folder()
        PartialState().wait_for_everyone()
        self._load_rows()
        todo = [r for r in self.runs if self.rows.get(r.key(), {}).get("status") != "ok"]
        log.info("ablation %s: %d runs, %d done, %d to run", self.out_dir, len(self.runs), len(self.runs) - len(todo), len(todo))
        for i, run in enumerate(todo, 1):
            log.info("ablation run %d/%d: %s", i, len(todo), run.name)
            row = self._run_one(run)
            self.rows[run.key()] = row
            if main:
                self._write_rows()
                write_report(self.out_dir, [self.rows[r.key()] for r in self.runs if r.key() in self.rows], self.metric)
        if main and not todo:
            write_report(self.out_dir, [self.rows[r.key()] for r in self.runs if r.key() in self.rows], self.metric)
        return [self.rows[r.key()] for r in self.runs]

    def _run_one(self, run: AblationRun) -> dict[str, Any]:
        from accelerate import PartialState

        run_dir = self.out_dir / "runs" / run.name
        row: dict[str, Any] = {"modalities": run.combo, "fusion": run.fusion, "seed": run.seed, "run_dir": str(run_dir)}
        start = time.time()
        try:
            config = run_config(self.base, run, self.out_dir)
            resume = last_checkpoint(run_dir) is not None  # interrupted: continue where it stopped
            state = PartialState()
            if not resume and run_dir.exists() and state.is_main_process:
                shutil.rmtree(run_dir)  # a failed or barely started run starts again
            state.wait_for_everyone()
            result = train(None, resume=run_dir) if resume else train(config, run_dir=run_dir)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the sweep goes on
            log.error("ablation run %s failed: %s: %s", run.name, type(exc).__name__, exc)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text(traceback.format_exc())
            return {**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                    "time_s": round(time.time() - start, 1)}
        for split, metrics in (("dev", result.dev), ("test", result.test)):
            for m in METRICS:
                row[f"{split}_{m}"] = metrics[m] if metrics else ""
        return {**row, "status": "ok", "best_epoch": result.best_epoch, "epochs": result.epochs,
                "time_s": round(result.time_s, 1), "error": ""}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (modalities, fusion): mean and std over seeds of the dev and test ``metric``, and how many runs."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        cell = cells.setdefault((row["modalities"], row["fusion"]), {"dev": [], "test": [], "failed": 0})
        if row["status"] != "ok":
            cell["failed"] += 1
            continue
        for split in ("dev", "test"):
            value = row.get(f"{split}_{metric}")
            if value not in ("", None):
                cell[split].append(float(value))
    for cell in cells.values():
        cell["n"] = len(cell["dev"])
        for split in ("dev", "test"):
            cell[f"{split}_stat"] = _cell(cell[split]) if cell[split] else None
    return cells


def write_report(out_dir: str | Path, rows: list[dict[str, Any]], metric: str = "weighted_f1") -> None:
    """``results.md`` and ``results.png`` from the rows of ``results.csv``."""
    out_dir = Path(out_dir)
    cells = summarize(rows, metric)
    combos = list(dict.fromkeys(r["modalities"] for r in rows))
    fusions = list(dict.fromkeys(r["fusion"] for r in rows))
    seeds = sorted({int(r["seed"]) for r in rows})

    def dev_mean(key):
        stat = cells.get(key, {}).get("dev_stat")
        return stat[0] if stat else -math.inf

    selected = {c: max(fusions, key=lambda f: dev_mean((c, f))) for c in combos}
    selected = {c: f for c, f in selected.items() if dev_mean((c, f)) > -math.inf}
    overall = max(selected.items(), key=lambda cf: dev_mean(cf), default=None)

    lines = [f"# Ablation: {out_dir.name}", "",
             f"{metric} (%), mean ± std over seeds {', '.join(map(str, seeds))}. For each modality combination the "
             "fusion with the best mean on **dev** is in bold; the test table reports every cell, with the "
             "dev-selected ones in bold. Nothing is selected on test.", ""]
    for split in ("dev", "test"):
        lines += [f"## {split}", "", "| modalities | " + " | ".join(fusions) + " |", "|---|" + "---|" * len(fusions)]
        for c in combos:
            row = []
            for f in fusions:
                cell = cells.get((c, f))
                row.append(_fmt(cell[f"{split}_stat"], cell["n"], bold=selected.get(c) == f) if cell else "–")
            lines.append(f"| {c} | " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Selected on dev", "", "| modalities | fusion | runs | dev | test |", "|---|---|---|---|---|"]
    for c, f in selected.items():
        cell = cells[(c, f)]
        lines.append(f"| {c} | {f} | {cell['n']} | {_fmt(cell['dev_stat'], cell['n'])} | {_fmt(cell['test_stat'], cell['n'])} |")
    if overall is not None:
        cell = cells[overall]
        lines += ["", f"Best configuration on dev: **{overall[0]}, {overall[1]}**: dev {_fmt(cell['dev_stat'], cell['n'])}, "
                      f"test {_fmt(cell['test_stat'], cell['n'])} ({cell['n']} seed(s))."]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed runs", "", "| modalities | fusion | seed | error |", "|---|---|---|---|"]
        lines += [f"| {r['modalities']} | {r['fusion']} | {r['seed']} | {r['error'].replace('|', '/')} |" for r in failed]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    plot_results(cells, combos, fusions, metric, out_dir / "results.png")


def plot_results(cells: dict, combos: list[str], fusions: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.2 * len(combos) * max(1, len(fusions)) * 0.6 + 3), 4.2), sharey=True)
    width = 0.8 / max(1, len(fusions))
    for ax, split in zip(axes, ("dev", "test")):
        for j, f in enumerate(fusions):
            means, stds = [], []
            for c in combos:
                stat = cells.get((c, f), {}).get(f"{split}_stat")
                means.append(stat[0] if stat else 0.0)
                stds.append(stat[1] if stat else 0.0)
            xs = [i + (j - (len(fusions) - 1) / 2) * width for i in range(len(combos))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=f)
        ax.set_xticks(range(len(combos)))
        ax.set_xticklabels(combos, rotation=30, ha="right")
        ax.set_title(split)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{metric} (%)")
    axes[-1].legend(title="fusion", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def ablate(config: str | Path | Config, overrides: list[str] | None = None, modalities: str | Sequence[str] = "all",
           fusions: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
           out_dir: str | Path | None = None) -> Path:
    """Run (or continue) a sweep; returns its folder. ``fusions``/``seeds`` default to the config's own."""
    base = config if isinstance(config, Config) else load_config(config, overrides)
    if isinstance(config, Config) and overrides:
        raise ConfigError("overrides are only applied to a config loaded from YAML; edit the Config object instead")
    fusions = list(fusions or [base.model.fusion.name])
    for f in fusions:
        if f not in FUSIONS:
            raise ConfigError(f"--fusion: unknown fusion '{f}'; registered: {', '.join(FUSIONS.names())}")
    seeds = list(seeds if seeds is not None else [base.train.seed])
    combos = modality_combinations(modalities, base.model.modalities)
    runs = [AblationRun(c, f, s) for c in combos for f in fusions for s in seeds]
    for run in runs[: len(combos) * len(fusions)]:  # every cell's config is valid before the first run starts
        run_config(base, run, Path("."))
    out = Path(out_dir) if out_dir else Path(base.output_dir) / f"ablation-{base.name}"
    Ablation(base, out, runs).run()
    return out


__all__ = ["ablate", "Ablation", "AblationRun", "modality_combinations", "run_config", "write_report", "summarize"]
