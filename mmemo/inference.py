"""EmotionRecognizer: fused inference on new inputs, any subset of modalities, from a saved model.

Inputs (keywords of ``predict``; rows of ``predict_batch``):

- ``text``: a string; ``context``: earlier turns, strings or ``(speaker, text)`` pairs; ``speaker``.
- ``audio``: a path (wav, flac, mp3, ogg, m4a, or a video file's audio track) or ``(array, sample_rate)``
  with the array ``[samples]``, ``[channels, samples]`` or ``[samples, channels]`` (NumPy or torch).
- ``video``: a path (mp4, mkv, webm, avi, mov) or frames in memory: ``[T, H, W, C]`` or ``[T, C, H, W]``
  (NumPy or torch, uint8 or float in [0, 1]) or a list of PIL images. A video file's audio track is the
  audio input unless ``audio`` is given.
- ``image``: a path (jpg, png, ...), a PIL image, or an ``[H, W]`` / ``[H, W, C]`` / ``[C, H, W]`` array.

Long inputs follow the rule the model was trained with: audio longer than the saved config's
``data.max_audio_seconds`` is cut to its first that many seconds, and vision samples ``data.num_frames``
frames across the whole clip (so memory does not grow with length); text longer than the text encoder's
``max_length`` tokens is cut. Each cut is reported as a warning.

An input that cannot be used (unsupported format, missing, corrupt or empty file, empty string, silent
or zero-length audio, unreadable image) is dropped with a warning naming it and the reason, and the
prediction uses the remaining modalities; with none left, ``predict`` raises ``InputError``. A value of
the wrong type (say an int, or an audio array without its sample rate) raises ``TypeError`` at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from mmemo.config import Config
from mmemo.data.dataset import Collator
from mmemo.data.examples import Example, Turn
from mmemo.data.media import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaError,
    describe,
    is_audio_pair,
    is_path,
    is_url,
    media_duration,
)
from mmemo.errors import InputError
from mmemo.labels import LabelSet
from mmemo.models.model import EmotionModel

log = logging.getLogger("mmemo")
# A fast tokenizer raises "Already borrowed" when two threads call it at once; tokenizing is cheap.
_TEXT_LOCK = threading.Lock()

INPUT_FIELDS = ("text", "audio", "video", "image", "context", "speaker")
READABLE_SUFFIXES = {
    "audio": AUDIO_SUFFIXES | VIDEO_SUFFIXES,
    "video": VIDEO_SUFFIXES | IMAGE_SUFFIXES,
    "image": IMAGE_SUFFIXES,
}


@dataclass
class Prediction:
    """One input's prediction. ``contributions[m]`` is p(label) with every input minus p(label) with
    modality ``m`` marked absent (positive: ``m`` pushed towards the label); it is given for each used
    modality when at least two were used. In ``predict_batch`` an input with no usable modality gets
    ``label=None`` and ``error`` instead of stopping the batch."""

    label: str | None
    probs: dict[str, float]
    modalities: list[str]  # the modalities the prediction used
    contributions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    id: str | None = None
    error: str | None = None

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "probs": {k: round(v, digits) for k, v in self.probs.items()},
            "modalities": self.modalities,
            "contributions": {k: round(v, digits) for k, v in self.contributions.items()},
            "warnings": self.warnings,
            "error": self.error,
        }


def check_input_types(text=None, audio=None, video=None, image=None, context=None, speaker=None) -> None:
    """Raise ``TypeError`` naming the argument when a value is of a kind no processor reads."""
    from PIL import Image

    def fail(name: str, expected: str, value: Any, hint: str = "") -> None:
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}{hint}")

    if text is not None and not isinstance(text, str):
        fail("text", "a string", text)
    if speaker is not None and not isinstance(speaker, str):
        fail("speaker", "a string", speaker)
    if audio is not None and not (is_path(audio) or is_audio_pair(audio)):
        hint = "; an array needs its sample rate: audio=(array, sample_rate)" if hasattr(audio, "shape") else ""
        fail("audio", "a path or (array, sample_rate)", audio, hint)
    if video is not None and not (is_path(video) or hasattr(video, "shape") or isinstance(video, (list, tuple))):
        fail("video", "a path, a frames array/tensor or a list of images", video)
    if image is not None and not (is_path(image) or isinstance(image, Image.Image) or hasattr(image, "shape")):
        fail("image", "a path, a PIL image or an array/tensor", image)
    if context is not None:
        if isinstance(context, str) or not isinstance(context, Sequence):
            fail("context", "a list of strings or (speaker, text) pairs", context)
        for turn in context:
            if not (isinstance(turn, str) or (isinstance(turn, (tuple, list)) and len(turn) == 2 and isinstance(turn[1], str))):
                fail("context", "a list of strings or (speaker, text) pairs", turn)


def make_example(example_id: str = "input", text: str | None = None, audio: Any = None, video: Any = None, image: Any = None,
                 context: Sequence | None = None, speaker: str | None = None, use_video_audio: bool = True) -> Example:
    """An ``Example`` from ``predict`` keywords; a video file stands in for the audio when none is given."""
    check_input_types(text, audio, video, image, context, speaker)
    turns = tuple(Turn(None, t) if isinstance(t, str) else Turn(*t) for t in (context or ()))
    example = Example(id=example_id, text=text, audio=audio, video=video, image=image, speaker=speaker, context_before=turns)
    return with_video_audio(example) if use_video_audio else example


def with_video_audio(example: Example) -> Example:
    """A video file's audio track becomes the audio input when no audio is given."""
    if example.audio is None and is_path(example.video) and Path(example.video).suffix.lower() in VIDEO_SUFFIXES:
        example.audio = example.video
        example.meta["audio_from_video"] = True
    return example


class InputPreparer:
    """One example's raw inputs -> processor tensors, plus what the user must be told: the inputs that
    were dropped (and why) and the long inputs that were cut. Runs in DataLoader workers in
    ``predict_batch``.

    In the main process, the media of one example are read at the same time, each in its own thread:
    decoders release the GIL, so the audio track is read while the video's frames are decoded."""

    def __init__(self, processors: dict[str, Any], max_audio_seconds: float | None):
        self.processors = processors
        self.max_audio_seconds = max_audio_seconds
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, index: int, example: Example, parallel_media: bool = True) -> dict[str, Any]:
        """``parallel_media=False`` where the caller already prepares several examples at once."""
        notes = self._ignored(example)
        example, context_note = self._fit_context(example)
        notes += context_note
        wanted = [m for m in self.processors if _source(example, m) is not None]
        media = [m for m in wanted if m != "text"]
        if parallel_media and len(media) > 1 and get_worker_info() is None:
            pool = self._executor()
            futures = {m: pool.submit(self._read, m, example) for m in media[1:]}
            results = {m: self._read(m, example) for m in wanted if m not in futures}
            results |= {m: f.result() for m, f in futures.items()}
        else:
            results = {m: self._read(m, example) for m in wanted}
        inputs: dict[str, Any] = {m: None for m in self.processors}
        dropped: list[tuple[str, str]] = []  # (modality, why)
        for m in wanted:  # in the model's modality order, whatever finished first
            tensors, why, cut = results[m]
            inputs[m] = tensors
            if why is not None:
                dropped.append((m, why))
            notes += cut
        return {"index": index, "id": example.id, "label": -1, "inputs": inputs, "issues": [],
                "dropped": dropped, "notes": notes}

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mmemo-read")
        return self._pool

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without the threads
        return {**self.__dict__, "_pool": None}

    def _read(self, m: str, example: Example) -> tuple[dict[str, torch.Tensor] | None, str | None, list[str]]:
        """(tensors, why the input was dropped, warnings about cuts) for modality ``m``."""
        processor = self.processors[m]
        source = _source(example, m)
        try:
            if m == "text":
                with _TEXT_LOCK:
                    tensors = processor(example)
                    return tensors, None, self._cut(m, example, processor, tensors)
            _check_format(example, m)
            tensors = processor(example)
        except MediaError as err:
            return None, str(err), []
        except Exception as exc:  # anything else a decoder throws: name the input, keep the traceback in debug logs
            log.debug("reading %s input %s failed", m, describe(source), exc_info=True)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return None, f"{describe(source)}: cannot read ({type(exc).__name__}{': ' + first if first else ''})", []
        return tensors, None, self._cut(m, example, processor, tensors)

    def _ignored(self, example: Example) -> list[str]:
        notes = []
        if example.text is not None and "text" not in self.processors:
            notes.append("text ignored: this model has no text input")
        if example.audio is not None and "audio" not in self.processors and not example.meta.get("audio_from_video"):
            notes.append("audio ignored: this model has no audio input")
        if (example.video is not None or example.image is not None) and "vision" not in self.processors:
            notes.append(f"{'video frames' if example.video is not None else 'image'} ignored: this model has no vision input")
        elif example.video is not None and example.image is not None:
            notes.append("image ignored: vision reads the video's frames")
        return notes

    def _fit_context(self, example: Example) -> tuple[Example, list[str]]:
        """Keep the dialogue context the text encoder was trained with: its last ``context_turns`` turns."""
        text = self.processors.get("text")
        if not example.context_before or text is None:
            return example, []
        past = getattr(text.config, "context_turns", 0)
        if past <= 0:
            return dataclasses.replace(example, context_before=()), [
                "context ignored: this model's text encoder was trained without dialogue context (context_turns: 0)"]
        return dataclasses.replace(example, context_before=example.context_before[-past:]), []

    def _cut(self, modality: str, example: Example, processor: Any, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Warnings for inputs longer than the model reads (the long-input rule in the module docstring)."""
        if modality == "audio" and self.max_audio_seconds is not None:
            source = example.audio
            if is_path(source):
                seconds = media_duration(source)
            else:
                array, rate = source
                seconds = max(np.shape(array) or (0,)) / int(rate)
            if seconds is not None and seconds > self.max_audio_seconds + 0.05:
                return [f"audio: {describe(source)} is {seconds:.1f} s long; only its first {self.max_audio_seconds:g} s "
                        "are used (data.max_audio_seconds)"]
        if modality == "text" and "target_mask" in tensors and hasattr(processor, "tokenizer"):
            total = len(processor.tokenizer(example.text, add_special_tokens=False)["input_ids"])
            kept = int(tensors["target_mask"].sum())
            if kept < total:
                return [f"text: {total} tokens long; only its first {kept} are used (the text encoder's max_length)"]
        return []


def _source(example: Example, modality: str) -> Any:
    if modality == "vision":
        return example.video if example.video is not None else example.image
    return getattr(example, modality)


def _check_format(example: Example, modality: str) -> None:
    field_name = modality if modality != "vision" else ("video" if example.video is not None else "image")
    source = getattr(example, field_name)
    if not is_path(source):
        return
    if is_url(source):
        raise MediaError(source, "URLs are not read", "download the file first")
    suffix = Path(source).suffix.lower()
    allowed = READABLE_SUFFIXES[field_name]
    if suffix not in allowed:
        raise MediaError(source, "unsupported format",
                         f"{suffix or 'no file extension'}; {field_name} reads {', '.join(sorted(allowed))}")


class _PreparedInputs(Dataset):
    def __init__(self, examples: list[Example], preparer: InputPreparer):
        self.examples = examples
        self.preparer = preparer

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.preparer(index, self.examples[index])


class EmotionRecognizer:
    """Processors + model, ready for ``predict``; load with ``from_pretrained(model_dir_or_hub_id)``."""

    def __init__(self, model: EmotionModel, config: Config, label_set: LabelSet, model_dir: Path | None = None,
                 device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = config
        self.label_set = label_set
        self.modalities = list(model.modalities)
        self.processors = {
            m: type(enc).build_processor(config.model.encoders[m], config.data, model_dir) for m, enc in model.encoders.items()
        }
        self.collator = Collator(self.processors)
        self.preparer = InputPreparer(self.processors, config.data.max_audio_seconds if "audio" in self.processors else None)

    # -- the saved-model format -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, device: str | torch.device | None = None,
                        allow_pickle: bool = False, revision: str | None = None, token: str | None = None) -> EmotionRecognizer:
        """A saved model folder, a run folder (its dev-selected ``best/``), or a Hugging Face Hub repo id.

        Weights load from safetensors only; a pickled checkpoint is refused unless ``allow_pickle=True``.
        """
        from mmemo.models.hub import resolve_model_dir

        path = resolve_model_dir(path_or_hub_id, revision=revision, allow_pickle=allow_pickle, token=token)
        model, config, label_set = EmotionModel.from_pretrained(path, allow_pickle=allow_pickle)
        return cls(model, config, label_set, path, device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """A self-contained folder: config.yaml, model.safetensors, labels.json, encoders/ (tokenizer...)."""
        return self.model.save_pretrained(directory, self.config, self.label_set)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload mmemo model") -> str:
        """Save to a temporary folder and upload it to a Hugging Face Hub model repository (needs a network)."""
        import tempfile

        from mmemo.models.hub import push_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            return push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)

    @property
    def labels(self) -> list[str]:
        return list(self.label_set.names)

    # -- prediction --------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, text: str | None = None, audio: Any = None, video: Any = None, image: Any = None,
                context: Sequence | None = None, speaker: str | None = None) -> Prediction:
        """Predict from any subset of the model's modalities (input kinds: see the module docstring).

        An unusable input is dropped with a warning (logged and in ``Prediction.warnings``); with no
        usable input left, ``InputError`` names each input and the reason.
        """
        example = make_example("input", text, audio, video, image, context, speaker,
                               use_video_audio="audio" in self.modalities)
        pred = self._predict_items([self.preparer(0, example)])[0]
        if pred.error:
            raise InputError(pred.error)
        for w in pred.warnings:
            log.warning(w)
        pred.id = None
        return pred

    @torch.inference_mode()
    def predict_batch(self, inputs: Iterable[Mapping[str, Any]] | str | os.PathLike, batch_size: int = 8,
                      num_workers: int = 0, progress: bool = True, columns: dict[str, str] | None = None,
                      num_threads: int | None = None) -> list[Prediction]:
        """Predictions for a list of ``predict`` keyword dicts (an ``id`` key is kept), or for every row of
        a CSV/JSONL manifest (fields as in training manifests, renamed by ``columns``; media paths
        relative to the manifest's folder), in input order, ``batch_size`` inputs per forward pass.

        With ``num_workers`` 0, inputs are decoded in ``num_threads`` threads of this process (default: one
        per input of a batch, at most one per CPU core; 1: one input after another), the next batch while
        the model runs this one: decoders release the GIL, and threads start at once where worker
        processes take a second or more. With ``num_workers`` > 0, in that many DataLoader processes.
        An input with no usable modality gets a ``Prediction`` with ``error`` set; the others are unaffected.
        """
        from tqdm.auto import tqdm

        examples = self._examples(inputs, columns)
        if num_workers > 0:
            batches = DataLoader(_PreparedInputs(examples, self.preparer), batch_size=batch_size, num_workers=num_workers,
                                 collate_fn=list)
        else:
            threads = num_threads if num_threads is not None else min(batch_size, os.cpu_count() or 1)
            if threads < 1:
                raise ValueError(f"predict_batch: num_threads must be at least 1, got {num_threads}")
            batches = self._prepared_in_threads(examples, batch_size, threads)
        preds: list[Prediction] = []
        with tqdm(total=len(examples), desc="predict", unit="input", disable=not progress) as bar:
            for items in batches:
                preds += self._predict_items(items)
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
            from mmemo.data.context import attach_context
            from mmemo.data.manifest import read_manifest_file

            examples = [ex for _, ex in read_manifest_file(inputs, columns, require_label=False)]
            if use_video_audio:
                examples = [with_video_audio(ex) for ex in examples]
            text_cfg = self.config.model.encoders.get("text")
            past, future = getattr(text_cfg, "context_turns", 0), getattr(text_cfg, "future_turns", 0)
            return attach_context(examples, past, future) if "text" in self.modalities else examples
        examples = []
        for i, row in enumerate(inputs):
            if not isinstance(row, Mapping):
                raise TypeError(f"predict_batch: input {i}: expected a dict of predict() keywords, got {describe(row)}")
            unknown = set(row) - set(INPUT_FIELDS) - {"id"}
            if unknown:
                raise TypeError(f"predict_batch: input {i}: unknown key(s) {', '.join(sorted(unknown))}; "
                                f"allowed: id, {', '.join(INPUT_FIELDS)}")
            fields = {k: v for k, v in row.items() if k != "id"}
            try:
                examples.append(make_example(str(row.get("id", i)), use_video_audio=use_video_audio, **fields))
            except TypeError as exc:
                raise TypeError(f"predict_batch: input {i}: {exc}") from None
        return examples

    def _predict_items(self, items: list[dict[str, Any]]) -> list[Prediction]:
        names = self.labels
        preds: list[Prediction | None] = [None] * len(items)
        usable = [i for i, it in enumerate(items) if any(v is not None for v in it["inputs"].values())]
        if usable:
            batch = _to_device(self.collator([items[i] for i in usable]), self.device)
            out = self.model(batch["inputs"], batch["present"])
            probs = out.probs.float()
            best = probs.argmax(-1)
            contributions = self._contributions(out, probs, best).cpu()
            probs, best = probs.cpu(), best.cpu()
            for row, i in enumerate(usable):
                item = items[i]
                preds[i] = Prediction(
                    label=names[int(best[row])],
                    probs=dict(zip(names, probs[row].tolist())),
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


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj
