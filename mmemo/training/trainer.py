"""The Trainer: all engineering (devices, precision, distribution, checkpoints, logs) around a plain
EmotionModel, through Hugging Face Accelerate.

Run folder: ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per eval; the source of truth),
``tb/`` (TensorBoard), ``checkpoints/last`` (for resume), ``best/`` (selected on dev),
``eval_<split>.json``, ``confusion_<split>.png``, ``predictions_<split>.csv``, ``media_issues.csv``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from mmemo.config import Config, ConfigError, load_config
from mmemo.data.cache import cache_frozen_encoders
from mmemo.data.dataset import Collator, EmotionDataset, MediaIssue, MediaReport
from mmemo.data.examples import Example, Splits
from mmemo.data.sources import load_splits
from mmemo.data.tables import DataError
from mmemo.errors import CheckpointError, NonFiniteLossError
from mmemo.labels import IGNORE, LabelSet
from mmemo.models.encoders.base import fit_processors
from mmemo.models.model import EmotionModel, load_weights, replace_dir
from mmemo.training import checkpoint as ckpt
from mmemo.training.adversarial import FastGradientMethod
from mmemo.training.losses import (
    build_criterion,
    cross_entropy,
    stack_twice,
    supervised_contrastive,
    symmetric_kl,
)
from mmemo.training.metrics import compute_metrics, format_metrics, format_table, plot_confusion
from mmemo.training.sampling import BUCKET_LENGTHS, bucketed_order
from mmemo.training.schedule import build_scheduler

log = logging.getLogger("mmemo")


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metric: float
    metric: str
    dev: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    media_issues: dict[str, int] = field(default_factory=dict)
    time_s: float = 0.0  # training and evaluation time, summed over resumed sessions

    @property
    def epochs(self) -> int:
        """Epochs trained (fewer than configured after early stopping)."""
        return len(self.history)


class EpochSampler(Sampler[int]):
    """A permutation (or class-balanced draw) that depends only on (seed, epoch), so every process of a
    distributed run, and a resumed run, sees the same order."""

    def __init__(self, n: int, seed: int, weights: torch.Tensor | None = None,
                 lengths: list[int] | None = None, batch_size: int = 1, pool_batches: int = 50):
        self.n, self.seed, self.weights, self.epoch = n, seed, weights, 0
        self.lengths, self.batch_size = lengths, batch_size  # lengths: batch similar lengths together
        self.pool_batches = pool_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.weights is not None:
            return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())
        if self.lengths is not None:
            return iter(bucketed_order(self.lengths, self.batch_size, g, self.pool_batches))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def aux_label_indices(aux_labels: dict[str, list[str]], examples: list[Example],
                      corpora: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Class index of each example for each extra target, read from ``example.meta[name]`` (case-insensitive).

    A head of an auxiliary corpus (``corpora``, from ``data.auxiliary``) has a target on that corpus's examples
    only, and every other head on the main corpus's only; the rest get IGNORE, which the loss skips.
    """
    out = {}
    for name, classes in aux_labels.items():
        index = {c.strip().lower(): i for i, c in enumerate(classes)}
        owner = name if name in corpora else None  # the corpus whose examples carry this target (None: the main one)
        targets = []
        for ex in examples:
            if ex.meta.get("corpus") != owner:
                targets.append(IGNORE)
                continue
            value = ex.meta.get(name)
            key = str(value).strip().lower() if value is not None else None
            if key not in index:
                raise DataError(f"{ex.meta.get('source', ex.id)}: model.aux_labels.{name}: "
                                f"{'no ' + name + ' field' if value is None else repr(value)}; expected one of {list(classes)}")
            targets.append(index[key])
        out[name] = torch.tensor(targets, dtype=torch.long)
    return out


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """``RUN/checkpoints/last`` when it exists; if a save was interrupted between its two renames
    (``model.replace_dir``), the previous copy it had set aside; else None. Whether its files are intact is
    checked when it is loaded."""
    folder = Path(run_dir) / "checkpoints"
    if (folder / "last").is_dir():
        return folder / "last"
    previous = sorted(folder.glob(f".last.old-*/{ckpt.MANIFEST_NAME}"), key=lambda p: p.stat().st_mtime)
    return previous[-1].parent if previous else None


def new_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.output_dir) / f"{config.name}-{stamp}"
    run_dir, i = base, 1
    while run_dir.exists():
        run_dir, i = Path(f"{base}-{i}"), i + 1
    return run_dir


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it, fp16 on older GPUs, full precision on CPU. An explicit request
    the device cannot honour is an error naming the key, not a silent fallback."""
    cuda = device.type == "cuda"
    bf16_ok = not cuda or torch.cuda.is_bf16_supported()
    if requested == "auto":
        return ("bf16" if bf16_ok else "fp16") if cuda else "no"
    if requested == "fp16" and not cuda:
        raise ConfigError(f"train.precision: fp16 needs a CUDA GPU, this run is on {device.type}; use bf16 or no")
    if requested == "bf16" and not bf16_ok:
        raise ConfigError(f"train.precision: this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use fp16 or no")
    return requested


def _accelerator(t) -> Any:
    """An Accelerator for one run. Accelerate keeps its state per process; a process that trains several
    runs (an ablation, a notebook) may change the mixed precision between them."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env

    # The process state (as Accelerator would build it: `accelerate launch --cpu` sets ACCELERATE_USE_CPU).
    device = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device
    precision = resolve_precision(t.precision, device)
    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state()  # the process group (PartialState) stays
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, set before it starts
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=t.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        step_scheduler_with_optimizer=False,
    )


class Trainer:
    """Builds data, model, optimiser and schedule from a Config, then ``fit()``s and evaluates.

    ``splits``/``label_set`` may be given directly (benchmarks that build their own folds); otherwise
    they come from ``config.data``.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path | None = None,
        resume: bool = False,
        splits: Splits | None = None,
        label_set: LabelSet | None = None,
    ):
        from accelerate.utils import set_seed

        self.config = config
        t = config.train
        self.accelerator = acc = _accelerator(t)
        self._deterministic_before = torch.are_deterministic_algorithms_enabled()
        set_seed(t.seed)  # Python, NumPy, torch (CPU and CUDA)
        torch.use_deterministic_algorithms(t.deterministic)  # for this run; finish() restores the process's setting
        if run_dir is None:
            run_dir = new_run_dir(config)
            if acc.num_processes > 1:  # every process must write into the main process's folder
                from accelerate.utils import broadcast_object_list

                run_dir = Path(broadcast_object_list([str(run_dir)])[0])
        self.run_dir = Path(run_dir)
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.yaml")
        acc.wait_for_everyone()

        if splits is None:
            splits, label_set = load_splits(config)
        assert label_set is not None
        self.splits, self.label_set = splits, label_set
        self._check_splits()

        self.model = EmotionModel(config.model, len(label_set), seed=t.seed).to(acc.device)
        processors = {
            m: type(enc).build_processor(config.model.encoders[m], config.data) for m, enc in self.model.encoders.items()
        }
        # Statistics learnt from inputs come first: they are part of a cached embedding's fingerprint.
        fit_processors(processors, splits)
        # Frozen encoders read their embeddings from the cache; the main process computes what is missing.
        with acc.main_process_first():
            every_example = [ex for name in splits.names() for ex in splits[name]]
            self.processors = cache_frozen_encoders(self.model, processors, every_example, config, acc)
        self.collator = Collator(self.processors)
        train_examples = splits["train"]
        counts = Counter(label_set.index(ex.label) for ex in train_examples if ex.label is not None)
        self.class_counts = [counts.get(i, 0) for i in range(len(label_set))]
        self.criterion = build_criterion(t, self.class_counts)
        self.aux_targets = aux_label_indices(config.model.aux_labels, train_examples, config.data.auxiliary)

        weights = None
        if t.sampler == "balanced":
            per_class = torch.tensor([1.0 / c if c else 0.0 for c in self.class_counts])
            weights = per_class[torch.tensor([label_set.index(ex.label) for ex in train_examples])]
        length = BUCKET_LENGTHS[t.bucket_by]
        lengths = [length(ex) for ex in train_examples] if t.sampler == "length_bucketed" else None
        self.train_sampler = EpochSampler(len(train_examples), t.seed, weights, lengths, t.batch_size,
                                          t.bucket_pool_batches)
        # Workers' seeds come from this generator, re-seeded each epoch, so that neither they nor a resumed
        # run depend on how often the global torch generator was drawn from.
        self.loader_generator = torch.Generator()
        train_loader = self._loader(train_examples, t.batch_size, sampler=self.train_sampler, generator=self.loader_generator)

        groups = self.model.parameter_groups(t.lr, t.encoder_lr, t.layer_decay, t.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        self.model, self.optimizer, self.train_loader = acc.prepare(self.model, self.optimizer, train_loader)
        self.criterion = self.criterion.to(acc.device)

        steps_per_epoch = math.ceil(len(self.train_loader) / t.grad_accum)
        self.total_steps = steps_per_epoch * t.epochs
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        if t.head_only_epochs and acc.num_processes > 1:
            raise ValueError("train.head_only_epochs is not supported in a distributed run yet: "
                             "the encoders' parameters would get no gradient on some steps")
        self.head_only_steps = steps_per_epoch * t.head_only_epochs
        in_encoders = {id(p) for p in self.unwrapped.encoders.parameters()}
        encoder_groups = {g["name"] for g in self.optimizer.param_groups if id(g["params"][0]) in in_encoders}
        self.scheduler = build_scheduler(self.optimizer, t.scheduler, t.warmup_ratio, self.total_steps,
                                         min(self.head_only_steps, self.total_steps - 1), encoder_groups)
        self.ema = None
        if t.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.unwrapped, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
        self.fgm = None
        if t.adversarial_epsilon:
            embeddings = [w for enc in self.unwrapped.encoders.values() if (w := enc.token_embeddings()) is not None]
            if not embeddings:
                raise ConfigError(
                    f"train.adversarial_epsilon: perturbs trainable token embeddings, and none of the encoders of "
                    f"{list(self.unwrapped.encoders)} has them (it needs an hf_text encoder whose embeddings are "
                    "not frozen by freeze or freeze_token_embeddings)")
            self.fgm = FastGradientMethod(embeddings, t.adversarial_epsilon)

        self.state: dict[str, Any] = {"epoch": 0, "batches_in_epoch": 0, "global_step": 0, "best_metric": None,
                                      "best_epoch": None, "bad_epochs": 0, "history": [], "epoch_loss": [0.0, 0],
                                      "time_s": 0.0}
        self.media = MediaReport()
        self.writer = None
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        if resume:
            self._load_checkpoint()

    # ------------------------------------------------------------------------------------------
    # Setup helpers
    # ------------------------------------------------------------------------------------------

    def _check_splits(self) -> None:
        """Train and the selection split must exist; no split the source has may be empty."""
        t = self.config.train
        have = ", ".join(f"{k} ({len(v)})" for k, v in self.splits.splits.items()) or "none"
        for name in ("train", t.select_on):
            if name not in self.splits:
                raise DataError(f"split '{name}' is missing or empty (splits found: {have})")
        for name, examples in self.splits.splits.items():
            if not examples:
                raise DataError(f"split '{name}' is empty (splits found: {have})")

    def _loader(self, examples: list[Example], batch_size: int, sampler: Sampler | None = None,
                generator: torch.Generator | None = None) -> DataLoader:
        d = self.config.data
        dataset = EmotionDataset(examples, self.processors, self.label_set)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=d.num_workers,
            collate_fn=self.collator,
            worker_init_fn=_seed_worker,
            generator=generator,
            persistent_workers=d.num_workers > 0,
        )

    def eval_loader(self, split: str) -> DataLoader:
        bs = self.config.train.eval_batch_size or self.config.train.batch_size
        return self.accelerator.prepare(self._loader(self.splits[split], bs))

    @property
    def unwrapped(self) -> EmotionModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def evaluated(self) -> torch.nn.Module:
        """What is evaluated, selected and saved: the moving average of the weights when there is one."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        """``checkpoints/last``: model, optimiser, scheduler, moving average, RNG states (one file per process)
        and trainer state, in safetensors and JSON with a SHA-256 manifest (``checkpoint.py``), atomically."""
        acc = self.accelerator
        final = self.run_dir / "checkpoints" / "last"
        tmp = self.run_dir / "checkpoints" / ".last.tmp"
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        ckpt.save_tree(ckpt.rng_state(), tmp, f"rng_{acc.process_index}")
        media = self._all_media_issues()  # what every process has seen so far survives a resume
        if acc.is_main_process:
            ckpt.save_model_weights(self.unwrapped, tmp / ckpt.MODEL_NAME)
            for name, tree in self._checkpoint_states().items():
                ckpt.save_tree(tree, tmp, name)
            state = {**self.state, "accelerator_step": acc.step, "media_issues": [asdict(i) for i in media.issues.values()]}
            ckpt.save_tree(state, tmp, "trainer_state")
        acc.wait_for_everyone()
        if acc.is_main_process:
            ckpt.write_manifest(tmp, [f for f in tmp.iterdir() if f.is_file()], world_size=acc.num_processes)
            replace_dir(tmp, final)
        acc.wait_for_everyone()

    def _checkpoint_states(self) -> dict[str, Any]:
        """The state trees a checkpoint holds besides the weights, RNG and trainer state."""
        states: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.ema is not None:
            states["ema"] = self.ema.state_dict()
        if self.accelerator.scaler is not None:
            states["grad_scaler"] = self.accelerator.scaler.state_dict()
        return states

    def _all_media_issues(self) -> MediaReport:
        """The media issues seen by every process (a collective call in a distributed run)."""
        issues = list(self.media.issues.values())
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            issues = gather_object(issues)
        report = MediaReport()
        report.add(issues)
        return report

    def _last_checkpoint(self) -> Path:
        path = last_checkpoint(self.run_dir)
        if path is None:
            raise FileNotFoundError(f"{self.run_dir / 'checkpoints' / 'last'}: no checkpoint to resume from")
        return path

    def _load_checkpoint(self) -> None:
        """Restore everything ``_save_checkpoint`` wrote, after checking every file against the manifest: a
        damaged, missing or old pickled file is refused by name, never resumed from."""
        acc = self.accelerator
        path = self._last_checkpoint()
        manifest = ckpt.verify(path)
        if manifest.get("world_size") != acc.num_processes:
            raise CheckpointError(f"{path}: written by {manifest.get('world_size')} process(es), this run has "
                                  f"{acc.num_processes}; resume with the same number for an exact continuation")
        ckpt.load_model_weights(self.unwrapped, path / ckpt.MODEL_NAME)
        loaders = {"optimizer": self.optimizer.load_state_dict, "scheduler": self.scheduler.load_state_dict}
        if self.ema is not None:
            loaders["ema"] = self.ema.load_state_dict
        if acc.scaler is not None:
            loaders["grad_scaler"] = acc.scaler.load_state_dict
        for name, load in loaders.items():
            try:
                load(ckpt.load_tree(path, name))
            except CheckpointError:
                raise
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                raise CheckpointError(f"{path / (name + '.json')}: does not fit this run ({type(exc).__name__}: "
                                      f"{exc})"[:500]) from None
        ckpt.set_rng_state(ckpt.load_tree(path, f"rng_{acc.process_index}"))
        state = ckpt.load_tree(path, "trainer_state")
        acc.step = state.pop("accelerator_step", 0)
        self.state = {**self.state, **state}
        self.media.add([MediaIssue(**issue) for issue in self.state.pop("media_issues", [])])
        if acc.is_main_process:  # metrics.jsonl holds exactly the evaluations the checkpoint knows
            tmp = self.run_dir / ".metrics.jsonl.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.state["history"]))
            os.replace(tmp, self.run_dir / "metrics.jsonl")
        log.info("resumed %s at epoch %d, batch %d", self.run_dir, self.state["epoch"], self.state["batches_in_epoch"])

    def _save_best(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.accelerator.unwrap_model(self.evaluated).save_pretrained(self.run_dir / "best", self.config, self.label_set)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        t = self.config.train
        args = [batch[k] for k in ("inputs", "present", "labels")]
        if t.rdrop_alpha:
            # R-Drop: the criterion over both copies is the mean of the two losses (equal halves, equal weights)
            args = [stack_twice(a) for a in args]
        out = self.model(*args, self.criterion)
        loss = out.loss
        if t.rdrop_alpha:
            loss = loss + t.rdrop_alpha * symmetric_kl(*out.logits.chunk(2))
        if t.supcon_weight:
            labelled = args[2] != IGNORE
            loss = loss + t.supcon_weight * supervised_contrastive(out.fused[labelled], args[2][labelled], t.supcon_temperature)
        if t.distill_weight:  # validate() makes sure train.ema_decay keeps an average
            teacher = self.ema.module.eval()
            with torch.no_grad():
                target = teacher(*args[:2]).logits
            loss = loss + t.distill_weight * F.mse_loss(out.logits.float(), target.float())
        if t.l2_penalty:
            matrices = [p for p in self.model.parameters() if p.requires_grad and p.ndim > 1]
            loss = loss + t.l2_penalty / 2 * sum(p.float().pow(2).sum() for p in matrices)
        if self.aux_targets and t.aux_weight:
            rows = batch["index"].cpu()
            for name, logits in out.aux_logits.items():
                target = self.aux_targets[name][rows].to(logits.device)
                if t.rdrop_alpha:
                    target = stack_twice(target)
                loss = loss + t.aux_weight * cross_entropy(logits, target, label_smoothing=t.label_smoothing)
        return loss

    def _hold_encoders(self) -> None:
        """In the head-only phase (``train.head_only_epochs``) the encoders run without a graph, in eval
        mode, and the optimiser skips them; after it they train (those frozen by config stay frozen)."""
        held = self.state["global_step"] < self.head_only_steps
        for m, enc in self.unwrapped.encoders.items():
            if not self.config.model.encoders[m].freeze:
                enc.hold(held)
                enc.train(self.model.training)

    def fit(self) -> TrainResult:
        acc, t = self.accelerator, self.config.train
        from tqdm.auto import tqdm

        session_start, time_before = time.time(), self.state["time_s"]
        stop = self._early_stopped()  # a resumed run that had stopped early stays stopped
        while self.state["epoch"] < t.epochs and not stop:
            epoch = self.state["epoch"]
            self.train_loader.set_epoch(epoch)  # the sampler's order and Accelerate's own epoch counter
            self.loader_generator.manual_seed(t.seed * 1_000_003 + epoch)
            skip = self.state["batches_in_epoch"]
            if not skip:
                self.state["epoch_loss"] = [0.0, 0]
            loader = acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            self._hold_encoders()
            self.model.train()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not (t.progress and acc.is_main_process),
                       initial=skip, total=len(self.train_loader), leave=False, dynamic_ncols=True)
            for batch in bar:
                self.media.add(batch["issues"])
                with acc.accumulate(self.model):
                    loss = self._training_loss(batch)
                    self._check_finite(loss, epoch)
                    before = self.fgm.gradients() if self.fgm is not None else None
                    acc.backward(loss)
                    if self.fgm is not None:
                        with self.fgm.perturbed(before) as moved:
                            if moved:
                                adversarial = self._training_loss(batch)
                                self._check_finite(adversarial, epoch)
                                acc.backward(adversarial)
                    if acc.sync_gradients and t.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.state["batches_in_epoch"] += 1
                self.state["epoch_loss"][0] += loss.item()
                self.state["epoch_loss"][1] += 1
                running = self.state["epoch_loss"][0] / self.state["epoch_loss"][1]
                if acc.sync_gradients:
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update_parameters(self.unwrapped)
                    self.state["global_step"] += 1
                    step = self.state["global_step"]
                    if step == self.head_only_steps:
                        self._hold_encoders()
                    if self.writer is not None and step % t.log_every_steps == 0:
                        self.writer.add_scalar("train/loss", running, step)
                        for g in self.optimizer.param_groups:
                            self.writer.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], step)
                    bar.set_postfix(loss=f"{running:.3f}")
                    if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0:
                        self.state["time_s"] = time_before + time.time() - session_start
                        self._save_checkpoint()
                    if t.max_steps and step >= t.max_steps:
                        stop = True
                        break
            bar.close()
            loss_sum, batches = self.state["epoch_loss"]
            self.state["epoch"] += 1
            self.state["batches_in_epoch"] = 0
            dev = self.evaluate_split(t.select_on)
            value = dev[t.metric]
            improved = self.state["best_metric"] is None or value > self.state["best_metric"] or t.selection == "last"
            self.state["time_s"] = time_before + time.time() - session_start
            record = {"epoch": epoch + 1, "step": self.state["global_step"], "split": t.select_on,
                      "train_loss": round(loss_sum / max(batches, 1), 5), "time_s": round(self.state["time_s"], 1),
                      **{k: dev[k] for k in ("accuracy", "weighted_f1", "macro_f1", "uar", "n")},
                      "per_class_f1": {k: v["f1"] for k, v in dev["per_class"].items()}, "best": improved}
            self.state["history"].append(record)
            self._log(record)
            if self.writer is not None:
                self.writer.add_scalar("train/epoch_loss", record["train_loss"], self.state["global_step"])
                for k in ("accuracy", "weighted_f1", "macro_f1", "uar"):
                    self.writer.add_scalar(f"{t.select_on}/{k}", dev[k], self.state["global_step"])
                self.writer.flush()
            if acc.is_main_process:
                mark = " *" if improved else ""
                tqdm.write(f"epoch {epoch + 1}/{t.epochs}  loss {record['train_loss']:.4f}  "
                           f"{t.select_on}: {format_metrics(dev)}{mark}")
            if improved:
                self.state.update(best_metric=value, best_epoch=epoch + 1, bad_epochs=0)
                self._save_best()
            else:
                self.state["bad_epochs"] += 1
            self._save_checkpoint()
            if self._early_stopped():
                if acc.is_main_process:
                    tqdm.write(f"early stopping: no {t.metric} gain on {t.select_on} for {self.state['bad_epochs']} epochs")
                break
        result = self.finish()
        result.time_s = time_before + time.time() - session_start
        return result

    def _early_stopped(self) -> bool:
        patience = self.config.train.early_stopping_patience
        return patience is not None and self.state["bad_epochs"] >= patience

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        """Stop on a NaN or infinite loss (in any process) before it reaches the weights or a checkpoint."""
        acc = self.accelerator
        finite = torch.isfinite(loss.detach()).float()
        if acc.num_processes > 1:
            finite = acc.reduce(finite, reduction="min")
        if bool(finite):
            return
        try:
            kept = f"the last good checkpoint is {self._last_checkpoint()}"
        except FileNotFoundError:
            kept = "no checkpoint had been written yet (see train.checkpoint_every_steps)"
        raise NonFiniteLossError(
            f"loss is {loss.item()} at step {self.state['global_step'] + 1} (epoch {epoch + 1}, batch "
            f"{self.state['batches_in_epoch'] + 1}); training stopped, {kept}"
        )

    # ------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict_split(self, split: str) -> tuple[list[int], list[int], list[list[float]], list[int]]:
        """Labels, predictions, probabilities and example indices over the whole split, exactly once
        (``gather_for_metrics`` drops the padding a distributed sampler adds)."""
        acc = self.accelerator
        model = self.evaluated
        was_training = model.training
        model.eval()
        y_true, y_pred, probs, index = [], [], [], []
        for batch in self.eval_loader(split):
            self.media.add(batch["issues"])
            with acc.autocast():  # the average is not wrapped by Accelerate, so mixed precision is asked for here
                out = model(batch["inputs"], batch["present"])
            p, labels, idx = acc.gather_for_metrics((out.probs.float(), batch["labels"], batch["index"]))
            y_true += labels.tolist()
            y_pred += p.argmax(-1).tolist()
            probs += p.tolist()
            index += idx.tolist()
        model.train(was_training)
        return y_true, y_pred, probs, index

    def evaluate_split(self, split: str) -> dict[str, Any]:
        y_true, y_pred, _, _ = self.predict_split(split)
        return compute_metrics(y_true, y_pred, self.label_set.names)

    def write_evaluation(self, split: str) -> dict[str, Any]:
        y_true, y_pred, probs, index = self.predict_split(split)
        metrics = compute_metrics(y_true, y_pred, self.label_set.names)
        if self.accelerator.is_main_process:
            write_eval_files(self.run_dir, split, metrics, self.label_set, self.splits[split], y_pred, probs, index)
        return metrics

    def finish(self) -> TrainResult:
        acc, t = self.accelerator, self.config.train
        best_dir = self.run_dir / "best"
        acc.wait_for_everyone()
        if (best_dir / "model.safetensors").exists():
            load_weights(acc.unwrap_model(self.evaluated), best_dir)
        results = {}
        splits = [t.select_on] + (["test"] if t.eval_test and "test" in self.splits and t.select_on != "test" else [])
        for split in splits:
            results[split] = self.write_evaluation(split)
        report = self._all_media_issues()
        if acc.is_main_process:
            report.write(self.run_dir)
            if len(report):
                log.warning(report.summary() + f" (listed in {self.run_dir / 'media_issues.csv'})")
        if self.writer is not None:
            self.writer.close()
        torch.use_deterministic_algorithms(self._deterministic_before)
        acc.wait_for_everyone()
        return TrainResult(
            run_dir=self.run_dir,
            best_epoch=self.state["best_epoch"] or 0,
            best_metric=self.state["best_metric"] if self.state["best_metric"] is not None else float("nan"),
            metric=t.metric,
            dev=results.get(t.select_on),
            test=results.get("test"),
            history=self.state["history"],
            media_issues=report.counts(),
        )


def write_eval_files(run_dir: Path, split: str, metrics: dict, label_set: LabelSet, examples: list[Example],
                     y_pred: list[int], probs: list[list[float]], index: list[int]) -> None:
    import csv

    (run_dir / f"eval_{split}.json").write_text(json.dumps({"split": split, "labels": list(label_set.names), **metrics}, indent=2))
    plot_confusion(metrics["confusion"], label_set.names, run_dir / f"confusion_{split}.png", title=f"{split} (n={metrics['n']})")
    with open(run_dir / f"predictions_{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "prediction", *[f"p_{n}" for n in label_set.names]])
        for i, pred, p in sorted(zip(index, y_pred, probs)):
            w.writerow([examples[i].id, examples[i].label, label_set.names[pred], *[f"{x:.4f}" for x in p]])


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------


def train(config: Config | str | Path, overrides: list[str] | None = None, run_dir: str | Path | None = None,
          resume: str | Path | None = None, splits: Splits | None = None, label_set: LabelSet | None = None) -> TrainResult:
    """Train a model from a config (object or YAML path); ``resume`` continues a run folder."""
    if resume is not None:
        resume = Path(resume)
        if not (resume / "config.yaml").exists():
            raise FileNotFoundError(f"{resume}: not a run folder (no config.yaml)")
        config = load_config(resume / "config.yaml", overrides)
        return Trainer(config, run_dir=resume, resume=True, splits=splits, label_set=label_set).fit()
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides are only applied to a config loaded from YAML; edit the Config object instead")
    return Trainer(config, run_dir=run_dir, splits=splits, label_set=label_set).fit()


def evaluate(run: str | Path, split: str = "dev", batch_size: int | None = None) -> dict[str, Any]:
    """Evaluate a run's dev-selected model (``RUN/best``) on one split; writes ``eval_<split>.json``."""
    from tqdm.auto import tqdm

    run = Path(run)
    model_dir = run / "best" if (run / "best").exists() else run
    model, config, label_set = EmotionModel.from_pretrained(model_dir)
    run_config = load_config(run / "config.yaml") if (run / "config.yaml").exists() else config
    run_config.data.labels = list(label_set.names)
    splits, _ = load_splits(run_config)
    if split not in splits:
        raise DataError(f"split '{split}' is missing or empty (splits found: {', '.join(splits.names())})")
    processors = {m: type(enc).build_processor(config.model.encoders[m], config.data, model_dir)
                  for m, enc in model.encoders.items()}
    fit_processors(processors, splits)
    examples = splits[split]
    loader = DataLoader(EmotionDataset(examples, processors, label_set), batch_size=batch_size or config.train.batch_size,
                        collate_fn=Collator(processors), num_workers=run_config.data.num_workers)
    report = MediaReport()
    y_true, y_pred, probs, index = [], [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"evaluate {split}", leave=False):
            report.add(batch["issues"])
            out = model(batch["inputs"], batch["present"])
            y_true += batch["labels"].tolist()
            y_pred += out.probs.argmax(-1).tolist()
            probs += out.probs.tolist()
            index += batch["index"].tolist()
    metrics = compute_metrics(y_true, y_pred, label_set.names)
    if run.is_dir():
        write_eval_files(run, split, metrics, label_set, examples, y_pred, probs, index)
    metrics["media_issues"] = report.counts()
    print(format_table(metrics, label_set.names, title=f"{run} on {split}"))
    return metrics


__all__ = ["Trainer", "TrainResult", "train", "evaluate", "last_checkpoint", "NonFiniteLossError"]
