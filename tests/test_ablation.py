"""The ablation runner: the grid, resumability, failures, the report, and the per-combination configs."""

import csv
from pathlib import Path

import pytest

import mmemo.ablation as ablation_module  # where ablate looks train up
from mmemo.ablation import modality_combinations, write_report
from mmemo.cli import main
from mmemo.config import MODALITIES, ConfigError, load_config
from mmemo.data.loading import load_splits
from mmemo.registry import FUSIONS
from tests.conftest import tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "meld"
COMBOS = ["text", "audio", "vision", "text_audio", "text_vision", "audio_vision", "text_audio_vision"]


def test_modality_combinations():
    assert modality_combinations("all", MODALITIES) == [
        ("text",), ("audio",), ("vision",), ("text", "audio"), ("text", "vision"), ("audio", "vision"),
        ("text", "audio", "vision")]
    assert modality_combinations("all", ["audio", "text"]) == [("text",), ("audio",), ("text", "audio")]
    assert modality_combinations("vision+text,audio", MODALITIES) == [("text", "vision"), ("audio",)]
    with pytest.raises(ConfigError, match="'txt' is not a combination"):
        modality_combinations("txt", MODALITIES)


def test_unknown_fusion_is_named_before_anything_runs(tmp_path):
    cfg = tmp_path / "c.yaml"
    tiny_config(tmp_path).save(cfg)
    assert main(["ablate", str(cfg), "--fusion", "concat,no_such_fusion", "--out", str(tmp_path / "sweep")]) == 2
    assert not (tmp_path / "sweep").exists()


def test_failed_run_is_recorded_the_sweep_goes_on_and_a_restart_retries_only_it(demo_tree, tmp_path, monkeypatch):
    cfg = tmp_path / "tiny.yaml"
    tiny_config(demo_tree, ("text", "audio"), data__max_examples=4, train__eval_test=False).save(cfg)
    out = tmp_path / "sweep"
    args = ["ablate", str(cfg), "--modalities", "text,audio", "--seeds", "0,1", "--out", str(out)]
    real_train, started = ablation_module.train, []

    def flaky_train(config=None, *a, **kw):
        started.append(config.model.modalities if config is not None else "resume")
        if config is not None and config.model.modalities == ["audio"] and config.train.seed == 1:
            raise RuntimeError("disk on fire")
        return real_train(config, *a, **kw)

    monkeypatch.setattr(ablation_module, "train", flaky_train)
    assert main(args) == 0
    rows = {(r["modalities"], r["seed"]): r for r in csv.DictReader(open(out / "results.csv"))}
    assert len(rows) == 4 and rows[("audio", "1")]["status"] == "failed"
    assert rows[("audio", "1")]["error"] == "RuntimeError: disk on fire"
    assert "disk on fire" in (out / "runs" / "audio-concat-seed1" / "error.txt").read_text()
    assert all(r["status"] == "ok" for k, r in rows.items() if k != ("audio", "1"))
    assert rows[("text", "0")]["epochs"] == "1" and float(rows[("text", "0")]["time_s"]) > 0
    report = (out / "results.md").read_text()
    assert "## Failed runs" in report and "disk on fire" in report

    monkeypatch.setattr(ablation_module, "train", lambda config=None, *a, **kw: started.append("again") or real_train(config, *a, **kw))
    assert main(args) == 0
    assert started.count("again") == 1  # only the failed run
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["status"] for r in rows] == ["ok"] * 4 and "Failed" not in (out / "results.md").read_text()

    assert main([*args[:2], "train.lr=0.5", *args[2:]]) == 2  # another config into the same folder
    # options and overrides in any order: an override after the options reaches every run
    assert main([*args, "train.lr=0.5", "--out", str(tmp_path / "other"), "--seeds", "0"]) == 0
    assert {r["seed"] for r in csv.DictReader(open(tmp_path / "other" / "results.csv"))} == {"0"}
    assert load_config(tmp_path / "other" / "ablation.yaml").train.lr == 0.5


def test_report_is_dev_selected_mean_and_std_over_seeds(tmp_path):
    def row(mods, fusion, seed, dev, test, status="ok"):
        return {"modalities": mods, "fusion": fusion, "seed": seed, "status": status, "dev_weighted_f1": dev,
                "test_weighted_f1": test, "error": "" if status == "ok" else "boom"}

    rows = [row("text", "concat", 0, 60, 50), row("text", "concat", 1, 62, 52),
            row("text", "late", 0, 70, 40), row("text", "late", 1, 72, 42),  # best on dev, worse on test
            row("audio", "concat", 0, 30, 35), row("audio", "late", 0, "", "", "failed")]
    write_report(tmp_path, rows, "weighted_f1")
    md = (tmp_path / "results.md").read_text()
    dev, test = md.split("## dev")[1].split("## test")
    assert "| text | 61.00 ± 1.41 | **71.00 ± 1.41** |" in dev
    assert "| text | 51.00 ± 1.41 | **41.00 ± 1.41** |" in test  # test of the dev-selected cell, not the test-best
    assert "| audio | **30.00** | – |" in dev
    assert "Best configuration on dev: **text, late**: dev 71.00 ± 1.41, test 41.00 ± 1.41 (2 seed(s))." in md
    assert "| audio | late | 0 | boom |" in md
    assert (tmp_path / "results.png").stat().st_size > 1000


@pytest.mark.parametrize("combo", COMBOS)
def test_meld_config_per_modality_combination(combo, shared_data):
    config = load_config(CONFIGS / f"{combo}.yaml", [f"data.root={shared_data / 'meld'}"])
    assert config.model.modalities == combo.split("_")
    assert config.model.fusion.name in FUSIONS and config.data.source == "meld"
    assert config.name == f"meld-{combo}"
    if combo == "text":  # the shared MELD CSVs (no clips) are enough for text
        splits, labels = load_splits(config)
        assert len(splits["train"]) == 9989 and len(splits["dev"]) == 1109 and labels.name == "meld7"
