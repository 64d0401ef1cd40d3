"""Scoring a large collection on Ray Data: the recognizer as a ``map_batches`` actor pool, one model per actor.

A social-media archive or a year of calls outgrows one machine. ``score`` reads a Parquet collection (or any
``ray.data.Dataset``), runs ``EmotionRecognizer.predict_batch`` in each of ``num_actors`` actors (each loads the
model once, on a GPU when ``num_gpus`` asks for one) and adds the same columns as ``prediction_columns``; with
``output`` it writes them back to Parquet. The same call runs on a laptop (a local Ray instance) and on a cluster
(``ray.init(address="auto")`` first, or ``RAY_ADDRESS``): Ray places the actors and streams the blocks.

Needs the ``ray`` extra: ``pip install mmemo[ray]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mmemo.inference.prediction import PREDICTION_COLUMNS, prediction_columns
from mmemo.inference.recognizer import EmotionRecognizer


def _arrow_types() -> dict[str, Any]:
    import pyarrow as pa

    words = pa.list_(pa.string())
    return {"pred_label": pa.string(), "pred_score": pa.float64(), "pred_probs": pa.list_(pa.float64()),
            "pred_modalities": words, "pred_warnings": words, "pred_error": pa.string()}


class RecognizerActor:
    """One actor of the pool: loads the model once, then scores Arrow batches (columns as ``predict_batch`` reads
    them, mapped by ``columns``; other columns pass through untouched)."""

    def __init__(self, model: str, columns: dict[str, str] | None = None, device: str | None = None,
                 dtype: str | None = None, num_threads: int | None = None):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.recognizer = EmotionRecognizer.from_pretrained(model, device=device, dtype=dtype)
        self.columns = dict(columns or {})

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        preds = self.recognizer.predict_batch(rows, batch_size=max(1, len(rows)), progress=False,
                                              columns=self.columns, num_threads=1)
        types = _arrow_types()
        for name, values in prediction_columns(preds, self.recognizer.labels).items():
            if name in batch.column_names:
                batch = batch.drop_columns([name])
            batch = batch.append_column(name, pa.array(values, type=types[name]))
        return batch


def score(dataset: Any, model: str | os.PathLike, *, output: str | os.PathLike | None = None,
          columns: Mapping[str, str] | None = None, batch_size: int = 16, num_actors: int = 1, num_gpus: float = 0.0,
          num_cpus: float = 1.0, dtype: str | None = None, num_blocks: int | None = None) -> Any:
    """Score every row of ``dataset`` (a ``ray.data.Dataset``, or Parquet file(s)/folder(s) to read) with the saved
    model ``model`` (a folder, run folder or Hub id every worker can reach), in ``num_actors`` actors of
    ``num_cpus`` CPUs and ``num_gpus`` GPUs each, ``batch_size`` rows per call. ``num_blocks``: repartition the
    rows into this many blocks first (default: as read); a small file read as one block feeds one actor only.

    Returns the scored ``ray.data.Dataset`` (lazy, as Ray Data is), its rows those of ``dataset`` plus the
    ``prediction_columns``; with ``output``, it is also written there as Parquet and that written dataset is
    returned. Rows whose inputs are all unusable get ``pred_error`` instead of stopping the job."""
    import ray

    if num_actors < 1:
        raise ValueError(f"num_actors: at least 1, got {num_actors}")
    if isinstance(dataset, (str, os.PathLike, list, tuple)):
        paths = [os.fspath(p) for p in dataset] if isinstance(dataset, (list, tuple)) else os.fspath(dataset)
        dataset = ray.data.read_parquet(paths)
    if num_blocks:
        dataset = dataset.repartition(num_blocks)
    scored = dataset.map_batches(
        RecognizerActor,
        fn_constructor_kwargs={"model": os.fspath(model), "columns": dict(columns or {}), "dtype": dtype,
                               "device": "cuda" if num_gpus else "cpu", "num_threads": max(1, int(num_cpus))},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )
    if output is not None:
        scored.write_parquet(os.fspath(output))
        return ray.data.read_parquet(os.fspath(output))
    return scored


__all__ = ["score", "RecognizerActor", "PREDICTION_COLUMNS"]
