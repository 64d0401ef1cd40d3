"""Scoring at scale on Ray Data: a local Ray instance, two actors, Parquet in and out; the output equals
predict_batch row for row. Needs the ray extra (pip install mmemo[ray]); skipped without it."""

import time

import pytest
import torch

from mmemo.inference import EmotionRecognizer
from mmemo.inference.prediction import PREDICTION_COLUMNS, prediction_columns
from mmemo.labels import get_label_set
from mmemo.models.model import EmotionModel
from tests.conftest import tiny_config
from tests.hf_utils import HF_COLUMNS, demo_dataset_dict

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'mmemo[ray]'")
pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'mmemo[ray]'")
datasets = pytest.importorskip("datasets")
COLUMNS = {"text": HF_COLUMNS["text"], "video": HF_COLUMNS["video"]}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def test_two_actors_score_parquet_as_predict_batch_does(local_ray, demo_tree, tmp_path):
    from mmemo.integrations.ray import score

    config = tiny_config(None)
    torch.manual_seed(0)
    folder = EmotionModel(config.model, 7).eval().save_pretrained(tmp_path / "model", config, get_label_set("meld7"))
    ds = datasets.concatenate_datasets([demo_dataset_dict(demo_tree, video_bytes=True)[s] for s in ("train", "test")])
    ds.to_parquet(str(tmp_path / "in.parquet"), batch_size=6)  # four row groups; the clips' bytes, a ClassLabel, a column nobody reads

    start = time.perf_counter()
    scored = score(tmp_path / "in.parquet", folder, output=tmp_path / "out", columns=COLUMNS, batch_size=4,
                   num_actors=2, num_cpus=0.5, num_blocks=4)
    rows = {r["id"]: r for r in scored.take_all()}
    elapsed = time.perf_counter() - start
    assert (tmp_path / "out").is_dir() and any((tmp_path / "out").glob("*.parquet"))

    rec = EmotionRecognizer.from_pretrained(folder, device="cpu")
    expected = prediction_columns(rec.predict_batch(ds, columns=COLUMNS, progress=False), rec.labels)
    assert sorted(rows) == sorted(ds["id"])
    for i, ex_id in enumerate(ds["id"]):
        row = rows[ex_id]
        assert row["unused"] == ds["unused"][i]  # the input's columns pass through
        assert row["pred_label"] == expected["pred_label"][i] and row["pred_error"] == expected["pred_error"][i]
        assert list(row["pred_modalities"]) == expected["pred_modalities"][i]
        if expected["pred_probs"][i] is None:  # train row 0 has no clip, row 1 a corrupt one: text still answers
            assert row["pred_probs"] is None
        else:
            assert list(row["pred_probs"]) == pytest.approx(expected["pred_probs"][i], abs=1e-5)
    assert set(PREDICTION_COLUMNS) <= set(next(iter(rows.values())))
    assert any("cannot decode" in " ".join(r["pred_warnings"]) for r in rows.values())
    print(f"ray scoring of {len(rows)} rows with 2 actors: {elapsed:.1f} s")
