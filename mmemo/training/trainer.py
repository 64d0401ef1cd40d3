"""The Trainer: the loop and its engineering (devices, precision, distribution, checkpoints) around a plain
EmotionModel, through Hugging Face Accelerate. Everything optional (moving average, adversarial training, a
head-only phase, early stopping, logs, when to checkpoint) is a callback (``callbacks/``), and every term added
to the loss is a loss term (``loss_terms/``): the loop has no trick-specific branch.

Run folder: ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per eval; the source of truth),
``tb/`` (TensorBoard), ``checkpoints/last`` (for resume), ``best/`` (selected on dev),
``eval_<split>.json``, ``confusion_<split>.png``, ``predictions_<split>.csv``, ``media_issues.csv``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Sampler

from mmemo.config import Config, load_config
from mmemo.data.dataset import Collator, EmotionDataset, MediaIssue, MediaReport
from mmemo.data.examples import Example, Splits
from mmemo.data.loading import check_modalities, load_splits
from mmemo.data.splits import write_split_file
from mmemo.errors import CheckpointError, ConfigError, DataError
from mmemo.labels import LabelSet
from mmemo.models.encoders.base import fit_processors
from mmemo.models.model import EmotionModel, load_weights, replace_dir
from mmemo.models.prediction import predict_batches
from mmemo.training import checkpoint as ckpt
from mmemo.training.cache import cache_frozen_encoders
from mmemo.training.callbacks import Callback, build_callbacks
from mmemo.training.evaluate import write_eval_files
from mmemo.training.loss_terms import build_loss_terms
from mmemo.training.losses import build_criterion
from mmemo.training.metrics import compute_metrics
from mmemo.training.sampling import EpochSampler, text_length
from mmemo.training.schedule import build_scheduler

log = logging.getLogger("mmemo")
C = TypeVar("C", bound=Callback)


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
    they come from ``config.data``. ``callbacks`` join those the config asks for (``build_callbacks``).
    """

    def __init__(self, config: Config, run_dir: str | Path | None = None, resume: bool = False,
                 splits: Splits | None = None, label_set: LabelSet | None = None,
                 callbacks: list[Callback] | None = None):
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
            labels_before = config.data.labels
            splits, label_set = load_splits(config)
            if acc.is_main_process:
                write_split_file(splits, self.run_dir)  # which example was in which split, for data.split.file
                if config.data.labels != labels_before:  # the source's classes: the run's config records them
                    config.save(self.run_dir / "config.yaml")
        assert label_set is not None
        self.splits, self.label_set = splits, label_set
        self._check_splits()

        self.model = EmotionModel(config.model, len(label_set), seed=t.seed).to(acc.device)
        processors = {
            m: type(enc).build_processor(config.model.encoders[m], config.data) for m, enc in self.model.encoders.items()
        }
        # Statistics learnt from inputs come first: they are part of a cached embedding's fingerprint.
        fit_processors(processors, splits)
        self.fitted_processors = processors  # saved with the model (per-speaker statistics), before any cache wraps them
        # Frozen encoders read their embeddings from the cache; the main process computes what is missing.
        with acc.main_process_first():
            every_example = [ex for name in splits.names() for ex in splits[name]]
            self.processors = cache_frozen_encoders(self.model, processors, every_example, config, acc)
        self.collator = Collator(self.processors)
        train_examples = splits["train"]
        counts = Counter(label_set.index(ex.label) for ex in train_examples if ex.label is not None)
        self.class_counts = [counts.get(i, 0) for i in range(len(label_set))]
        self.criterion = build_criterion(t, self.class_counts)

        weights = None
        if t.sampler == "balanced":
            per_class = torch.tensor([1.0 / c if c else 0.0 for c in self.class_counts])
            weights = per_class[torch.tensor([label_set.index(ex.label) for ex in train_examples])]
        lengths = [text_length(ex) for ex in train_examples] if t.sampler == "length_bucketed" else None
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

        self.steps_per_epoch = math.ceil(len(self.train_loader) / t.grad_accum)
        self.total_steps = self.steps_per_epoch * t.epochs
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.scheduler = build_scheduler(self.optimizer, t.scheduler, t.warmup_ratio, self.total_steps)

        self.state: dict[str, Any] = {"epoch": 0, "batches_in_epoch": 0, "global_step": 0, "best_metric": None,
                                      "best_epoch": None, "history": [], "epoch_loss": [0.0, 0], "time_s": 0.0}
        self.media = MediaReport()
        self.should_stop = False
        self.resumed = resume
        self.grad_norm: float | None = None  # the last step's gradient norm before clipping (when clipped)
        self.callbacks = build_callbacks(config) + list(callbacks or [])
        self.loss_terms = build_loss_terms(config, has_aux_heads=bool(self.unwrapped.aux_heads))
        for callback in self.callbacks:
            callback.setup(self)
        for term in self.loss_terms:
            term.setup(self)
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
        check_modalities(self.splits, self.config.model)

    def _check_usable(self, present: torch.Tensor) -> None:
        """After the first epoch: a modality that no training example could use (every file of it missing or
        undecodable) is an error naming it, with the media report written, instead of a model that silently
        ignores that input."""
        empty = [m for m, n in zip(self.unwrapped.modalities, present.tolist()) if n == 0]
        if empty:
            report = self._all_media_issues()
            if self.accelerator.is_main_process:
                report.write(self.run_dir)
            raise DataError(f"model.modalities: {', '.join(empty)} had no usable training example in the first epoch "
                            f"({report.summary()}; see {self.run_dir / 'media_issues.csv'})")

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

    def callback(self, kind: type[C]) -> C:
        """The callback of class ``kind``; a ConfigError when the config did not turn it on."""
        for callback in self.callbacks:
            if isinstance(callback, kind):
                return callback
        raise ConfigError(f"this run has no {kind.__name__} callback (the config does not turn it on)")

    def print(self, line: str) -> None:
        """A line on the console that does not break the progress bar (main process only)."""
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # ------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """``checkpoints/last``: model, optimiser, scheduler, callbacks' states, RNG states (one file per process)
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
        """The state trees a checkpoint holds besides the weights, RNG and trainer state, by file name."""
        states: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.accelerator.scaler is not None:
            states["grad_scaler"] = self.accelerator.scaler.state_dict()
        for callback in self.callbacks:
            if callback.name:
                states[f"callback_{callback.name}"] = callback.state_dict()
        return states

    def _state_loaders(self) -> dict[str, Any]:
        loaders: dict[str, Any] = {"optimizer": self.optimizer.load_state_dict, "scheduler": self.scheduler.load_state_dict}
        if self.accelerator.scaler is not None:
            loaders["grad_scaler"] = self.accelerator.scaler.load_state_dict
        for callback in self.callbacks:
            if callback.name:
                loaders[f"callback_{callback.name}"] = callback.load_state_dict
        return loaders

    def _all_media_issues(self) -> MediaReport:
        """The media issues seen by every process (a collective call in a distributed run)."""
        issues = list(self.media.issues.values())
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            issues = gather_object(issues)
        report = MediaReport()
        report.add(issues)
        return report

    def last_checkpoint(self) -> Path | None:
        return last_checkpoint(self.run_dir)

    def _load_checkpoint(self) -> None:
        """Restore everything ``save_checkpoint`` wrote, after checking every file against the manifest: a
        damaged, missing or old pickled file is refused by name, never resumed from."""
        acc = self.accelerator
        path = self.last_checkpoint()
        if path is None:
            raise CheckpointError(f"{self.run_dir / 'checkpoints' / 'last'}: no checkpoint to resume from")
        manifest = ckpt.verify(path)
        if manifest.get("world_size") != acc.num_processes:
            raise CheckpointError(f"{path}: written by {manifest.get('world_size')} process(es), this run has "
                                  f"{acc.num_processes}; resume with the same number for an exact continuation")
        ckpt.load_model_weights(self.unwrapped, path / ckpt.MODEL_NAME)
        for name, load in self._state_loaders().items():
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
        log.info("resumed %s at epoch %d, batch %d", self.run_dir, self.state["epoch"], self.state["batches_in_epoch"])

    def save_model(self, directory: Path, card: dict | None = None) -> None:
        """The model as it is now, as a saved model (``save_pretrained``, ``card`` for its model card), by the
        main process."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.unwrapped.save_pretrained(directory, self.config, self.label_set, self.fitted_processors, card=card)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The main loss (``train.loss``) plus each loss term's, weighted."""
        for term in self.loss_terms:
            batch = term.prepare(batch)
        out = self.model(batch["inputs"], batch["present"], batch["labels"], self.criterion)
        loss = out.loss
        for term in self.loss_terms:
            loss = loss + term.weight * term(batch, out, self.model)
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        self._call("on_loss", loss)
        self.accelerator.backward(loss)

    @property
    def running_loss(self) -> float:
        """The mean training loss of the epoch so far."""
        total, batches = self.state["epoch_loss"]
        return total / max(batches, 1)

    def fit(self) -> TrainResult:
        acc, t = self.accelerator, self.config.train
        from tqdm.auto import tqdm

        session_start, time_before = time.time(), self.state["time_s"]
        self._call("on_train_start")
        while self.state["epoch"] < t.epochs and not self.should_stop:
            epoch = self.state["epoch"]
            self.train_loader.set_epoch(epoch)  # the sampler's order and Accelerate's own epoch counter
            self.loader_generator.manual_seed(t.seed * 1_000_003 + epoch)
            skip = self.state["batches_in_epoch"]
            if not skip:
                self.state["epoch_loss"] = [0.0, 0]
            loader = acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            self._call("on_epoch_start")
            self.model.train()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not (t.progress and acc.is_main_process),
                       initial=skip, total=len(self.train_loader), leave=False, dynamic_ncols=True)
            # The first epoch counts each modality's usable examples, on the device (no sync per step).
            present = torch.zeros(len(self.unwrapped.modalities), dtype=torch.long, device=acc.device) \
                if epoch == 0 and not skip else None
            for batch in bar:
                self.media.add(batch["issues"])
                if present is not None:
                    present += batch["present"].sum(0).to(present.device, torch.long)
                with acc.accumulate(self.model):
                    loss = self.compute_loss(batch)
                    self._call("on_before_backward", batch)
                    self.backward(loss)
                    self._call("on_after_backward", batch)
                    if acc.sync_gradients and t.max_grad_norm:
                        self.grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.state["batches_in_epoch"] += 1
                self.state["epoch_loss"][0] += loss.item()
                self.state["epoch_loss"][1] += 1
                if acc.sync_gradients:
                    self.scheduler.step()
                    self.state["global_step"] += 1
                    self.state["time_s"] = time_before + time.time() - session_start
                    self._call("on_step_end")
                    bar.set_postfix(loss=f"{self.running_loss:.3f}")
                    if t.max_steps and self.state["global_step"] >= t.max_steps:
                        self.should_stop = True
                        break
            bar.close()
            if present is not None and not self.should_stop:
                self._check_usable(acc.reduce(present, reduction="sum").cpu())
            self.state["epoch"] += 1
            self.state["batches_in_epoch"] = 0
            self._evaluate_epoch(epoch, time_before + time.time() - session_start)
            self._call("on_epoch_end")
        result = self.finish()
        result.time_s = time_before + time.time() - session_start
        return result

    def _evaluate_epoch(self, epoch: int, time_s: float) -> None:
        """Evaluate the selection split, select, and let the callbacks see the record (inside one evaluation:
        a callback may swap in the weights to evaluate and save, as the moving average does)."""
        t = self.config.train
        self._call("on_evaluate_start")
        dev = self.evaluate_split(t.select_on)
        value = dev[t.metric]
        improved = self.state["best_metric"] is None or value > self.state["best_metric"] or t.selection == "last"
        self.state["time_s"] = time_s
        record = {"epoch": epoch + 1, "step": self.state["global_step"], "split": t.select_on,
                  "train_loss": round(self.running_loss, 5), "time_s": round(time_s, 1),
                  **{k: dev[k] for k in ("accuracy", "weighted_f1", "macro_f1", "uar", "n")},
                  "per_class_f1": {k: v["f1"] for k, v in dev["per_class"].items()}, "best": improved}
        self.state["history"].append(record)
        if improved:
            self.state.update(best_metric=value, best_epoch=epoch + 1)
        self._call("on_evaluate", record)
        self._call("on_evaluate_end")

    # ------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------

    def predict_split(self, split: str) -> tuple[list[int], list[int], list[list[float]], list[int]]:
        """Labels, predictions, probabilities and example indices over the whole split, exactly once
        (``gather_for_metrics`` drops the padding a distributed sampler adds)."""
        acc = self.accelerator
        y_true, y_pred, probs, index = [], [], [], []
        for batch, out in predict_batches(self.model, self.eval_loader(split), autocast=acc.autocast):
            self.media.add(batch["issues"])
            p, labels, idx = acc.gather_for_metrics((out.probs.float(), batch["labels"], batch["index"]))
            y_true += labels.tolist()
            y_pred += p.argmax(-1).tolist()
            probs += p.tolist()
            index += idx.tolist()
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
        """Load the dev-selected weights, evaluate the selection split (and test, once), write the media report."""
        acc, t = self.accelerator, self.config.train
        best_dir = self.run_dir / "best"
        acc.wait_for_everyone()
        if (best_dir / "model.safetensors").exists():
            load_weights(self.unwrapped, best_dir)
        self._call("on_train_end")
        results = {}
        splits = [t.select_on] + (["test"] if t.eval_test and "test" in self.splits and t.select_on != "test" else [])
        for split in splits:
            results[split] = self.write_evaluation(split)
        report = self._all_media_issues()
        if acc.is_main_process:
            report.write(self.run_dir)
            if len(report):
                log.warning(report.summary() + f" (listed in {self.run_dir / 'media_issues.csv'})")
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


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------


def train(config: Config | str | Path | None, overrides: list[str] | None = None, run_dir: str | Path | None = None,
          resume: str | Path | None = None, splits: Splits | None = None, label_set: LabelSet | None = None,
          callbacks: list[Callback] | None = None) -> TrainResult:
    """Train a model from a config (object or YAML path); ``resume`` continues a run folder."""
    if resume is not None:
        resume = Path(resume)
        if not (resume / "config.yaml").exists():
            raise CheckpointError(f"{resume}: not a run folder (no config.yaml)")
        config = load_config(resume / "config.yaml", overrides)
        return Trainer(config, run_dir=resume, resume=True, splits=splits, label_set=label_set, callbacks=callbacks).fit()
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides are only applied to a config loaded from YAML; edit the Config object instead")
    return Trainer(config, run_dir=run_dir, splits=splits, label_set=label_set, callbacks=callbacks).fit()


__all__ = ["Trainer", "TrainResult", "train", "last_checkpoint"]
