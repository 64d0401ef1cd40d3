"""EmotionRecognizer: fused inference on new inputs, any subset of modalities, from a saved model.

Input kinds and the rules for unusable or long inputs: ``mmemo.inference.inputs``.

Half precision: ``dtype="bfloat16"`` or ``"float16"`` runs the encoders under ``torch.autocast`` (matrix products
and convolutions in that type, the weights stay float32), where the device supports it: bfloat16 on CPUs and on
GPUs that have it, float16 on GPUs and on CPUs whose PyTorch build autocasts to it. Fusion and head then run again
in float32 on the encoders' embeddings: they cost little, and logits in bfloat16 keep about three significant
digits, so two close classes would tie.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmemo.config import Config
from mmemo.data.cells import media_value
from mmemo.data.dataset import Collator
from mmemo.data.examples import Example
from mmemo.data.loading import examples_to_predict, with_context
from mmemo.data.media import describe, is_path
from mmemo.data.readers.hf import read_split
from mmemo.errors import ConfigError, InputError
from mmemo.inference.enrollment import (
    Enrollment,
    enroll,
    enrolled_speakers,
    learners,
    load_enrollments,
    save_enrollments,
)
from mmemo.inference.inputs import INPUT_FIELDS, InputPreparer, PreparedInputs, make_example, with_video_audio
from mmemo.inference.prediction import Prediction, prediction_columns, ranked
from mmemo.inference.streaming import EmotionStream
from mmemo.inference.timeline import Timeline, TimelineRun
from mmemo.labels import LabelSet
from mmemo.models.card import read_model_card
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fitted import FITTED_NAME, fitted_states, load_saved_fitted, write_fitted
from mmemo.models.hub import push_folder, resolve_model_dir
from mmemo.models.model import EmotionModel
from mmemo.models.prediction import predict_batches

log = logging.getLogger("mmemo")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def inference_autocast(device: torch.device, dtype: str | torch.dtype | None
                       ) -> tuple[str, Callable[[], AbstractContextManager]]:
    """``dtype``'s name and its autocast context on ``device`` (float32 or None: none); ``ConfigError`` (a
    ``ValueError``) naming both where the device cannot run it."""
    names = {v: k for k, v in DTYPES.items()}
    name = names.get(dtype, str(dtype)) if isinstance(dtype, torch.dtype) else dtype
    if name is None or name == "float32":
        return "float32", nullcontext
    if name not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    half = DTYPES[name]
    if device.type == "cuda":
        if half is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"dtype: {device} does not support bfloat16; use float16")
    elif device.type != "cpu" or not torch.amp.is_autocast_available("cpu"):
        raise ConfigError(f"dtype: half precision is not supported on {device}; use float32")
    try:
        with torch.autocast(device.type, dtype=half), torch.inference_mode():
            torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    except RuntimeError as exc:
        raise ConfigError(f"dtype: {device} cannot run {name} ({exc})") from None
    return name, partial(torch.autocast, device.type, dtype=half)


class EmotionRecognizer:
    """Processors + model, ready for ``predict``; load with ``from_pretrained(model_dir_or_hub_id)``.

    ``dtype``: ``"bfloat16"`` or ``"float16"`` for half precision at inference (see the module docstring).
    ``card``: the model card's metadata (``mmemo.models.card.read_model_card``): labels, encoders, training
    data, and the metrics of each evaluated split when the model has them."""

    def __init__(self, model: EmotionModel, config: Config, label_set: LabelSet, model_dir: Path | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype, self.autocast = inference_autocast(self.device, dtype)
        self.model = model.to(self.device).eval()
        self.card = read_model_card(model_dir) if model_dir is not None else {}
        self.config = config
        self.label_set = label_set
        self.modalities = list(model.modalities)
        self.processors = {
            m: type(enc).build_processor(config.model.encoders[m], config.data, model_dir) for m, enc in model.encoders.items()
        }
        self.model_dir = model_dir
        if model_dir is not None:
            load_saved_fitted(model_dir, self.processors)  # per-speaker statistics; none in older folders
        self.collator = Collator(self.processors)
        self.preparer = InputPreparer(self.processors, config.data.max_audio_seconds if "audio" in self.processors else None)

    # -- the saved-model format -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, device: str | torch.device | None = None,
                        allow_pickle: bool = False, revision: str | None = None, token: str | None = None,
                        dtype: str | torch.dtype | None = None) -> EmotionRecognizer:
        """A saved model folder, a run folder (its dev-selected ``best/``), or a Hugging Face Hub repo id.

        Weights load from safetensors only; a pickled checkpoint is refused unless ``allow_pickle=True``.
        """
        path = resolve_model_dir(path_or_hub_id, revision=revision, allow_pickle=allow_pickle, token=token)
        model, config, label_set = EmotionModel.from_pretrained(path, allow_pickle=allow_pickle)
        return cls(model, config, label_set, path, device, dtype=dtype)

    def save_pretrained(self, directory: str | Path) -> Path:
        """A self-contained folder: config.yaml, model.safetensors, labels.json, encoders/ (tokenizer...), its
        model card, README.md, which keeps the card this model was loaded with (its metrics among them), and
        processors.safetensors with the per-speaker statistics (enrolled speakers included)."""
        return self.model.save_pretrained(directory, self.config, self.label_set, self.processors, card=self.card)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload mmemo model") -> str:
        """Save to a temporary folder and upload it to a Hugging Face Hub model repository (needs a network)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            return push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)

    @property
    def labels(self) -> list[str]:
        return list(self.label_set.names)

    # -- enrolment (mmemo.inference.enrollment) ------------------------------------------------------
    def enroll(self, speaker: str, clips: Iterable[Any]) -> Enrollment:
        """Learn ``speaker``'s statistics from a few of their unlabelled clips (audio paths, video paths whose
        audio track is used, ``(array, sample_rate)`` pairs, or dicts of ``predict`` keywords), for every
        processor with a fit step; ``predict(..., speaker=speaker)`` then uses them."""
        return enroll(self.processors, speaker, clips)

    @property
    def speakers(self) -> list[str]:
        """Speakers with statistics of their own (training speakers and enrolled ones)."""
        return sorted({s for p in learners(self.processors).values() for s in p.speakers()})

    @property
    def enrolled_speakers(self) -> list[str]:
        return enrolled_speakers(self.processors)

    def save_enrollments(self, path: str | Path, speakers: Iterable[str] | None = None) -> Path:
        """The enrolled speakers (all, or ``speakers``) in their own file: a folder (``enrollments.safetensors``
        in it) or a ``.safetensors`` path; ``load_enrollments`` on any recognizer of this model reads it."""
        return save_enrollments(self.processors, path, speakers)

    def load_enrollments(self, path: str | Path) -> list[str]:
        """Add the speakers of an enrolment file (or of a folder holding one); returns their names."""
        return load_enrollments(self.processors, path)

    def save_fitted(self, directory: str | Path | None = None) -> Path:
        """Write the processors' state (enrolled speakers included) into a model folder, by default the one
        this recognizer was loaded from, replacing its ``processors.safetensors`` atomically."""
        directory = Path(directory or self.model_dir or "")
        if not (directory / "config.yaml").is_file():
            raise FileNotFoundError(f"{directory}: not a saved model folder")
        states = fitted_states(self.processors)
        if not states:
            raise ConfigError("this model keeps no per-speaker statistics: nothing to save")
        return write_fitted(states, directory / FITTED_NAME)

    # -- timelines and streaming (mmemo.inference.timeline, .streaming) -------------------------------
    def predict_timeline(self, path: str | os.PathLike, window: float = 3.0, hop: float = 1.5, segments: str = "fixed",
                         transcript: str | os.PathLike | None = None, speaker: str | None = None, batch_size: int = 16,
                         progress: bool = False) -> Timeline:
        """Emotion over a whole recording (audio or video file, any length): a row (``start, end, label,
        probs``...) per window of ``window`` seconds every ``hop``, or per speech segment with
        ``segments="vad"``. The file is decoded as it is read; ``transcript`` (CSV/JSON of ``start, end,
        speaker, text``) gives each window its text and speaker. Unreadable regions give no rows and a
        warning (``Timeline.warnings``)."""
        return self.timeline_run(path, window, hop, segments, transcript, speaker, batch_size, progress).timeline()

    def timeline_run(self, path: str | os.PathLike, window: float = 3.0, hop: float = 1.5, segments: str = "fixed",
                     transcript: str | os.PathLike | None = None, speaker: str | None = None, batch_size: int = 16,
                     progress: bool = False) -> TimelineRun:
        """``predict_timeline``'s rows one by one as they are predicted (iterate over the result)."""
        return TimelineRun(self, path, window, hop, segments, transcript, speaker, batch_size, progress)

    def stream(self, sample_rate: int = 16000, window: float = 3.0, hop: float = 1.5,
               speaker: str | None = None) -> EmotionStream:
        """Live audio: ``feed(chunk)`` returns a row for each window the chunk completes."""
        return EmotionStream(self, sample_rate, window, hop, speaker)

    # -- prediction --------------------------------------------------------------------------------
    def __call__(self, inputs: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None = None, *,
                 top_k: int | None = 1, columns: dict[str, str] | None = None, **keywords: Any
                 ) -> list[dict[str, Any]] | list[list[dict[str, Any]]] | dict[str, list[Any]]:
        """Pipeline-shaped output, as transformers pipelines return it: ``[{"label", "score"}, ...]``, highest
        score first, ``top_k`` classes (None: every class). ``inputs`` is a text, a dict of ``predict``
        keywords, or a list of those (then one such list per input, through ``predict_batch``); or give the
        ``predict`` keywords themselves: ``recognizer(video="clip.mp4", top_k=3)``.

        Given a batch from ``datasets``' ``map`` (``ds.map(recognizer, batched=True)``, a column map through
        ``fn_kwargs={"columns": {...}}``), it returns the prediction columns (``prediction_columns``) to add;
        columns it does not read are left alone."""
        if _is_datasets_batch(inputs):
            n = len(next(iter(inputs.values()), []))
            rows = [{k: inputs[k][i] for k in inputs} for i in range(n)]
            preds = self.predict_batch(rows, batch_size=max(1, min(n, 32)), progress=False, columns=columns or {})
            return prediction_columns(preds, self.labels)
        if inputs is None:
            return self.predict(**keywords, top_k=top_k).top_k
        if keywords:
            raise TypeError("give either inputs or predict() keywords, not both")
        if columns is not None and isinstance(inputs, (str, Mapping)):
            raise TypeError("columns maps the keys of a list of inputs or of a dataset's batch")
        if isinstance(inputs, str):
            return self.predict(text=inputs, top_k=top_k).top_k
        if isinstance(inputs, Mapping):
            return self.predict(**inputs, top_k=top_k).top_k
        rows = [{"text": x} if isinstance(x, str) else x for x in inputs]
        preds = self.predict_batch(rows, batch_size=8, progress=False, top_k=top_k, columns=columns)
        for i, pred in enumerate(preds):
            if pred.error:
                raise InputError(f"input {i}: {pred.error}")
        return [pred.top_k for pred in preds]

    @torch.inference_mode()
    def predict(self, text: str | None = None, audio: Any = None, video: Any = None, image: Any = None,
                context: Sequence | None = None, speaker: str | None = None, top_k: int | None = None) -> Prediction:
        """Predict from any subset of the model's modalities (input kinds: see the module docstring).

        An unusable input is dropped with a warning (logged and in ``Prediction.warnings``); with no
        usable input left, ``InputError`` names each input and the reason. ``top_k``: how many classes
        ``Prediction.top_k`` lists (default: all).
        """
        example = make_example("input", text, audio, video, image, context, speaker,
                               use_video_audio="audio" in self.modalities)
        pred = self._predict_items([self.preparer(0, example)], top_k)[0]
        if pred.error:
            raise InputError(pred.error)
        for w in pred.warnings:
            log.warning(w)
        pred.id = None
        return pred

    @torch.inference_mode()
    def predict_batch(self, inputs: Iterable[Mapping[str, Any]] | str | os.PathLike, batch_size: int = 8,
                      num_workers: int = 0, progress: bool = True, columns: dict[str, str] | None = None,
                      num_threads: int | None = None, top_k: int | None = None) -> list[Prediction]:
        """Predictions for a list of ``predict`` keyword dicts (an ``id`` key is kept), for a ``datasets.Dataset``,
        or for every row of a CSV/JSONL manifest (fields as in training manifests; media paths relative to the
        manifest's folder), in input order, ``batch_size`` inputs per forward pass.

        ``columns`` maps fields to the inputs' own names (``{"video": "clip", "text": "transcript"}``); with it,
        and always for a Dataset, keys it does not use are ignored (without it, an unknown key of a dict is an
        error, to catch typos). Media values may be what ``datasets`` gives: ``{"path", "bytes"}``,
        ``{"array", "sampling_rate"}``, torchcodec decoders, PIL images; a Dataset's media columns are read
        undecoded and decoded once, by mmemo. ``prediction_columns(preds, recognizer.labels)`` turns the
        result into columns to add (``ds.add_column``).

        With ``num_workers`` 0, inputs are decoded in ``num_threads`` threads of this process (default: one
        per input of a batch, at most one per CPU core; 1: one input after another), the next batch while
        the model runs this one: decoders release the GIL, and threads start at once where worker
        processes take a second or more. With ``num_workers`` > 0, in that many DataLoader processes.
        An input with no usable modality gets a ``Prediction`` with ``error`` set; the others are unaffected.
        ``top_k``: how many classes each ``Prediction.top_k`` lists (default: all).
        """
        from tqdm.auto import tqdm

        examples = self._examples(inputs, columns)
        if num_workers > 0:
            batches = DataLoader(PreparedInputs(examples, self.preparer), batch_size=batch_size, num_workers=num_workers,
                                 collate_fn=list)
        else:
            threads = num_threads if num_threads is not None else min(batch_size, os.cpu_count() or 1)
            if threads < 1:
                raise ValueError(f"predict_batch: num_threads must be at least 1, got {num_threads}")
            batches = self._prepared_in_threads(examples, batch_size, threads)
        preds: list[Prediction] = []
        with tqdm(total=len(examples), desc="predict", unit="input", disable=not progress) as bar:
            for items in batches:
                preds += self._predict_items(items, top_k)
                bar.update(len(items))
        failed = sum(p.error is not None for p in preds)
        warned = sum(bool(p.warnings) for p in preds)
        if failed or warned:
            log.warning("predict_batch: %d of %d inputs had warnings, %d had no usable input (see Prediction.warnings "
                        "and .error)", warned, len(preds), failed)
        return preds

    def _prepared_in_threads(self, examples: list[Example], batch_size: int, threads: int) -> Iterable[list[dict[str, Any]]]:
        """Batches of prepared inputs in input order; while the caller runs one, the next two decode."""
        if threads == 1:
            for start in range(0, len(examples), batch_size):
                yield [self.preparer(i, examples[i]) for i in range(start, min(start + batch_size, len(examples)))]
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mmemo-batch") as pool:
            pending: deque = deque()
            submitted = 0

            def submit_ahead() -> None:
                nonlocal submitted
                while len(pending) < 2 * batch_size and submitted < len(examples):
                    pending.append(pool.submit(self.preparer, submitted, examples[submitted], parallel_media=False))
                    submitted += 1

            submit_ahead()
            while pending:
                batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
                submit_ahead()
                yield batch

    def _examples(self, inputs: Iterable[Mapping[str, Any]] | str | os.PathLike, columns: dict[str, str] | None) -> list[Example]:
        use_video_audio = "audio" in self.modalities
        if is_path(inputs):
            examples = examples_to_predict(inputs, self.config, columns)
            return [with_video_audio(ex) for ex in examples] if use_video_audio else examples
        if _is_dataset(inputs):
            examples, mapping, _ = read_split(inputs, "input", dict(columns or {}), None, "dataset", require_label=False)
            for i, ex in enumerate(examples):
                ex.id = ex.id if "id" in mapping else str(i)
            examples = with_context(examples, self.config.model) if "context" not in mapping else examples
            return [with_video_audio(ex) for ex in examples] if use_video_audio else examples
        examples = []
        wanted = {f: (columns or {}).get(f, f) for f in ("id", *INPUT_FIELDS)}
        for i, row in enumerate(inputs):
            if not isinstance(row, Mapping):
                raise TypeError(f"predict_batch: input {i}: expected a dict of predict() keywords, got {describe(row)}")
            if columns is None:
                unknown = set(row) - set(INPUT_FIELDS) - {"id"}
                if unknown:
                    raise TypeError(f"predict_batch: input {i}: unknown key(s) {', '.join(sorted(unknown))}; "
                                    f"allowed: id, {', '.join(INPUT_FIELDS)} (or give columns=... to map fields and "
                                    "ignore other keys)")
            else:
                row = {f: row[c] for f, c in wanted.items() if c in row}
            fields = {k: (media_value(v, f"input {i}: {k}") if k in ("audio", "video", "image") else v)
                      for k, v in row.items() if k != "id"}
            try:
                examples.append(make_example(str(row.get("id", i)), use_video_audio=use_video_audio, **fields))
            except TypeError as exc:
                raise TypeError(f"predict_batch: input {i}: {exc}") from None
        return examples

    def _predict_items(self, items: list[dict[str, Any]], top_k: int | None = None) -> list[Prediction]:
        names = self.labels
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k: expected a positive number of classes, got {top_k}")
        preds: list[Prediction | None] = [None] * len(items)
        usable = [i for i, it in enumerate(items) if any(v is not None for v in it["inputs"].values())]
        if usable:
            ((_, out),) = predict_batches(self.model, [self.collator([items[i] for i in usable])], self.device,
                                          autocast=self.autocast)
            if self.autocast is not nullcontext:  # half precision: fusion and head again, in float32
                out.embeddings = {m: ModalityEmbedding(e.seq.float(), e.mask, e.pooled.float())
                                  for m, e in out.embeddings.items()}
                out.probs = self.model.classify(out.embeddings, out.present).float().softmax(-1)
            probs = out.probs.float()
            best = probs.argmax(-1)
            contributions = self._contributions(out, probs, best).cpu()
            probs, best = probs.cpu(), best.cpu()
            for row, i in enumerate(usable):
                item = items[i]
                row_probs = dict(zip(names, probs[row].tolist()))
                preds[i] = Prediction(
                    label=names[int(best[row])],
                    probs=row_probs,
                    top_k=ranked(row_probs, top_k),
                    modalities=[m for m in self.modalities if item["inputs"][m] is not None],
                    contributions={m: float(contributions[row, j]) for j, m in enumerate(self.modalities)
                                   if not torch.isnan(contributions[row, j])},
                    warnings=[f"{m} dropped: {why}" for m, why in item["dropped"]] + item["notes"],
                    id=item["id"],
                )
        for i, item in enumerate(items):
            if preds[i] is None:
                reasons = "; ".join(f"{m}: {why}" for m, why in item["dropped"])
                reasons = reasons or f"nothing given; this model reads {', '.join(self.modalities)}"
                preds[i] = Prediction(None, {}, [], warnings=list(item["notes"]), id=item["id"],
                                      error=f"no usable input: {reasons}")
        return preds

    def _contributions(self, out, probs: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """``[B, M]``: p(label) minus p(label) with modality m marked absent, re-running only fusion and
        head on the embeddings already computed; NaN where m is absent or the only modality present."""
        present = out.present
        result = torch.full(present.shape, float("nan"), device=present.device)
        several = present.sum(1) > 1
        p_label = probs.gather(1, best[:, None])[:, 0]
        for j in range(present.shape[1]):
            rows = present[:, j] & several
            if not bool(rows.any()):
                continue
            without = present.clone()
            without[rows, j] = False  # rows with m alone keep it: fusions need one modality per row
            q = self.model.classify(out.embeddings, without).float().softmax(-1)
            result[rows, j] = (p_label - q.gather(1, best[:, None])[:, 0])[rows]
        return result


def _is_dataset(inputs: Any) -> bool:
    """A ``datasets.Dataset`` (checked by name first: importing ``datasets`` costs a second)."""
    if type(inputs).__name__ != "Dataset" or not hasattr(inputs, "column_names"):
        return False
    import datasets

    return isinstance(inputs, datasets.Dataset)


def _is_datasets_batch(inputs: Any) -> bool:
    """The batch ``datasets``' ``map(..., batched=True)`` passes to a function: columns of equal length."""
    if type(inputs).__name__ != "LazyBatch":
        return False
    from datasets.formatting.formatting import LazyBatch

    return isinstance(inputs, LazyBatch)
