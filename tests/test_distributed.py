"""Data parallel training under ``accelerate launch`` with two CPU processes (gloo)."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mmemo.data.readers.meld import read_meld

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_the_same_weights_and_evaluate_dev_once(demo_tree, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "MMEMO_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "tests.distributed_worker", str(demo_tree), str(run_dir), str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were averaged: one model, two processes
    assert all(r["text_input"] == "CachedProcessor" for r in ranks)
    assert ranks[0]["train_batches"] == 1  # 7 train examples, batch 4: each process trains on its own shard

    dev_ids = [ex.id for ex in read_meld(demo_tree).splits["dev"][:7]]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(r["n"] == 7 for r in records)  # not 8: no padding counted
    predicted = [row["id"] for row in csv.DictReader(open(run_dir / "predictions_dev.csv"))]
    assert sorted(predicted) == sorted(dev_ids)  # every dev example exactly once
    assert json.loads((run_dir / "eval_dev.json").read_text())["n"] == 7
    issues = {(r["example_id"], r["modality"]) for r in csv.DictReader(open(run_dir / "media_issues.csv"))}
    assert issues == {("train/dia0_utt0", "audio"), ("train/dia0_utt1", "audio"), ("train/dia0_utt2", "audio")}
