"""The training loop and its engineering: exact resume, atomic checkpoints, guard rails, precision, accumulation,
seeding, class imbalance, schedules and selection. (Callbacks and loss terms have test modules of their own.)"""

import csv
import json
import math
import random
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from mmemo.config import ConfigError, load_config
from mmemo.data.tables import DataError
from mmemo.errors import CheckpointError
from mmemo.labels import LabelError
from mmemo.models.model import replace_dir
from mmemo.training import checkpoint as ckpt
from mmemo.training.losses import FocalLoss, balanced_class_weights, build_criterion
from mmemo.training.sampling import EpochSampler
from mmemo.training.schedule import build_scheduler
from mmemo.training.trainer import Trainer, _seed_worker, last_checkpoint, train
from tests.conftest import KillAfterCheckpoint, Killed, tiny_config, tiny_overrides


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _history(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_run_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_run(demo_tree, tmp_path, ema_decay):
    # dropout, modality dropout and BatchNorm all draw on or carry state that the resumed run must restore;
    # so does the moving average of the weights
    cfg = tiny_overrides(demo_tree, ("text", "audio"), train__epochs=2, train__checkpoint_every_steps=1,
                         train__eval_test=False, data__max_examples=8, train__ema_decay=ema_decay)
    cfg["model"]["fusion"]["modality_dropout"] = 0.3
    config = load_config(None, cfg)

    straight = Trainer(config, run_dir=tmp_path / "straight")
    done = straight.fit()

    killed = Trainer(config, run_dir=tmp_path / "killed", callbacks=[KillAfterCheckpoint(step=3)])
    with pytest.raises(Killed):  # 2 steps per epoch: in the middle of epoch 2
        killed.fit()
    state = json.loads((tmp_path / "killed" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"], state["global_step"]) == (1, 1, 3)

    # a damaged RNG, sampler position (trainer state) or optimiser file is refused by name, never resumed from
    last = tmp_path / "killed" / "checkpoints" / "last"
    for name in ("rng_0.safetensors", "trainer_state.json", "optimizer.safetensors") if not ema_decay else ():
        intact = (last / name).read_bytes()
        (last / name).write_bytes(intact[:100])
        with pytest.raises(CheckpointError, match=re.escape(f"{last / name}: damaged")):
            train(None, resume=tmp_path / "killed")
        (last / name).write_bytes(intact)

    resumed = train(None, resume=tmp_path / "killed")
    assert _history(tmp_path / "killed") == _history(tmp_path / "straight")
    assert resumed.dev == done.dev and resumed.best_epoch == done.best_epoch
    a, b = (load_file(tmp_path / r / "best" / "model.safetensors") for r in ("straight", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # media issues seen before the kill are still reported
    assert resumed.media_issues == done.media_issues and len(done.media_issues) == 3
    last = [json.loads((tmp_path / r / "checkpoints" / "last" / "trainer_state.json").read_text()) for r in ("straight", "killed")]
    assert last[0]["epoch_loss"] == last[1]["epoch_loss"] and last[0]["global_step"] == last[1]["global_step"] == 4


def test_checkpoints_are_written_atomically(demo_tree, tmp_path, monkeypatch):
    config = tiny_config(demo_tree, ("text",), train__checkpoint_every_steps=1, train__max_steps=3, train__eval_test=False)
    trainer = Trainer(config, run_dir=tmp_path / "run")
    write_manifest = ckpt.write_manifest

    def crash_while_saving(directory, files, **info):
        if trainer.state["global_step"] == 2:
            (directory / "model.safetensors").write_bytes(b"half a file")
            raise Killed
        write_manifest(directory, files, **info)

    monkeypatch.setattr(ckpt, "write_manifest", crash_while_saving)
    with pytest.raises(Killed):
        trainer.fit()
    monkeypatch.undo()
    folder = tmp_path / "run" / "checkpoints"
    assert json.loads((folder / "last" / "trainer_state.json").read_text())["global_step"] == 1  # the last complete one

    # killed between replace_dir's two renames: the previous checkpoint, set aside, is still found
    aside = folder / ".last.old-999"
    (folder / "last").rename(aside)
    assert last_checkpoint(tmp_path / "run") == aside
    result = train(None, resume=tmp_path / "run")
    assert result.history[-1]["step"] == 3 and (folder / "last" / "trainer_state.json").exists()

    # and replace_dir never leaves the destination half-written
    src, dst = tmp_path / "new", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    (src / "f").write_text("new"), (dst / "f").write_text("old")
    replace_dir(src, dst)
    assert (dst / "f").read_text() == "new" and not src.exists() and not list(tmp_path.glob(".dst.old-*"))


def test_empty_splits_and_labels_outside_the_label_set_are_named(demo_tree, tmp_path):
    def write(split, rows):
        with open(tmp_path / f"{split}_sent_emo.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)

    tables = {s: list(csv.reader(open(demo_tree / f"{s}_sent_emo.csv", newline=""))) for s in ("train", "dev", "test")}
    write("train", tables["train"]), write("dev", tables["dev"]), write("test", tables["test"][:1])
    with pytest.raises(DataError, match=r"split 'test' is empty \(splits found: train \(16\), dev \(8\), test \(0\)\)"):
        Trainer(tiny_config(tmp_path, ("text",)), run_dir=tmp_path / "r")
    write("train", tables["train"][:1])
    with pytest.raises(DataError, match="split 'train' is missing or empty"):
        Trainer(tiny_config(tmp_path, ("text",)), run_dir=tmp_path / "r")
    rows = [list(r) for r in tables["train"][:4]]
    rows[3][rows[0].index("Emotion")] = "happy"
    write("train", rows)
    with pytest.raises(LabelError, match=r"train_sent_emo.csv: line 4 \(split train\): label 'happy' is not in label set meld7"):
        Trainer(tiny_config(tmp_path, ("text",)), run_dir=tmp_path / "r")


def _no_dropout(root, **extra):
    cfg = tiny_overrides(root, ("text",), data__max_examples=8, train__eval_test=False, **extra)
    cfg["model"]["encoders"]["text"]["model_overrides"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg["model"]["fusion"]["dropout"] = 0.0
    cfg["model"]["head_dropout"] = 0.0
    return load_config(None, cfg)


def test_gradient_accumulation_matches_the_larger_batch(demo_tree, tmp_path):
    big = Trainer(_no_dropout(demo_tree, train__batch_size=4), run_dir=tmp_path / "big")
    before = _weights(big.unwrapped)
    big.fit()
    accumulated = Trainer(_no_dropout(demo_tree, train__batch_size=2, train__grad_accum=2), run_dir=tmp_path / "acc")
    assert accumulated.total_steps == big.total_steps == 2
    accumulated.fit()
    a, b = _weights(big.unwrapped), _weights(accumulated.unwrapped)
    assert any(not torch.equal(before[k], a[k]) for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_bf16_mixed_precision_on_cpu_and_fp16_needs_a_gpu(demo_tree, tmp_path):
    trainer = Trainer(tiny_config(demo_tree, ("text",), train__precision="bf16", train__max_steps=2, data__max_examples=8,
                                  train__eval_test=False), run_dir=tmp_path / "bf16")
    dtypes = []
    handle = trainer.unwrapped.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    result = trainer.fit()
    handle.remove()
    assert trainer.accelerator.mixed_precision == "bf16" and dtypes[0] == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.unwrapped.parameters())  # master weights stay fp32
    assert math.isfinite(result.history[-1]["train_loss"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.precision: fp16 needs a CUDA GPU"):
            Trainer(tiny_config(demo_tree, ("text",), train__precision="fp16"), run_dir=tmp_path / "fp16")
    # the next run in the same process may go back to full precision
    assert Trainer(tiny_config(demo_tree, ("text",), train__precision="no"), run_dir=tmp_path / "fp32").accelerator.mixed_precision == "no"


def test_seeded_dataloader_workers_and_deterministic_mode(demo_tree, tmp_path):
    class Probe(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.tensor([random.random(), np.random.rand(), torch.rand(()).item()])

    def draw(epoch_seed):
        g = torch.Generator().manual_seed(epoch_seed)
        loader = DataLoader(Probe(), batch_size=1, num_workers=2, worker_init_fn=_seed_worker, generator=g)
        return torch.cat(list(loader))

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # the two workers draw different numbers

    seen = []
    trainer = Trainer(tiny_config(demo_tree, ("text",), train__deterministic=True, train__max_steps=1, data__max_examples=4,
                                  train__eval_test=False), run_dir=tmp_path / "det")
    handle = trainer.unwrapped.head.register_forward_hook(lambda *a: seen.append(torch.are_deterministic_algorithms_enabled()))
    trainer.fit()
    handle.remove()
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()  # on for the run, restored after


def test_class_weights_focal_loss_and_balanced_sampler(demo_tree, tmp_path):
    assert balanced_class_weights([10, 5, 0, 5]).tolist() == pytest.approx([20 / 30, 20 / 15, 1.0, 20 / 15])
    trainer = Trainer(tiny_config(demo_tree, ("text",), train__class_weights="auto", train__loss="focal",
                                  train__sampler="balanced"), run_dir=tmp_path / "run")
    counts = trainer.class_counts
    assert sum(counts) == 16
    assert trainer.criterion.weight.tolist() == pytest.approx(balanced_class_weights(counts).tolist())
    assert isinstance(trainer.criterion, FocalLoss)

    logits, target = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1]]), torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    pt = torch.exp(-ce)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.mean().item())
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(((1 - pt) ** 2 * ce).mean().item())
    cfg = tiny_config(None).train
    cfg.class_weights = "sqrt"
    assert build_criterion(cfg, [40, 10, 10]).weight.tolist() == pytest.approx([0.5 ** 0.5, 2 ** 0.5, 2 ** 0.5])
    cfg.class_weights = [1.0, 2.0]
    with pytest.raises(ValueError, match="2 weights for 3 labels"):
        build_criterion(cfg, [1, 1, 1])

    labels = torch.tensor([0] * 90 + [1] * 10)
    weights = (1.0 / torch.bincount(labels).float())[labels]
    sampler = EpochSampler(100, seed=0, weights=weights)
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    share = labels[torch.tensor(draws)].float().mean().item()
    assert 0.4 < share < 0.6  # the 10% class is drawn about half of the time
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler) and list(sampler) != draws[:100]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_linear_warmup_then_decay(demo_tree, tmp_path, schedule):
    trainer = Trainer(tiny_config(demo_tree, ("text",), train__scheduler=schedule, train__warmup_ratio=0.25,
                                  train__epochs=4, train__lr=1e-3, train__encoder_lr=1e-4), run_dir=tmp_path / "run")
    assert trainer.total_steps == 16
    head = [g for g in trainer.optimizer.param_groups if g["name"] == "fusion_head"][0]
    text = [g for g in trainer.optimizer.param_groups if g["name"] == "text.backbone"][0]
    lrs, text_lrs = [], []
    for _ in range(16):
        lrs.append(head["lr"])
        text_lrs.append(text["lr"])
        trainer.scheduler.step()
    assert lrs[:5] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])  # linear warmup over 4 steps
    decay = [1e-3 * (0.5 * (1 + math.cos(math.pi * i / 12)) if schedule == "cosine" else 1 - i / 12) for i in range(12)]
    assert lrs[4:] == pytest.approx(decay)
    assert text_lrs == pytest.approx([x / 10 for x in lrs])  # every group follows the same shape


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_scheduler_is_transformers_own_and_held_groups_start_their_schedule_late(schedule):
    from transformers import get_scheduler

    def lrs(scheduler, steps):
        out = []
        for _ in range(steps):
            out.append([g["lr"] for g in scheduler.optimizer.param_groups])
            scheduler.optimizer.step()
            scheduler.step()
        return torch.tensor(out)

    def optimizer():
        return torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 1.0, "name": "text.backbone"},
                                {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1, "name": "fusion_head"}])

    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    reference = lrs(get_scheduler(name, optimizer(), num_warmup_steps=3, num_training_steps=30), 30)
    assert torch.allclose(lrs(build_scheduler(optimizer(), schedule, 0.1, 30), 30), reference)
    held = lrs(build_scheduler(optimizer(), schedule, 0.1, 30, held_steps=10, held_groups={"text.backbone"}), 30)
    assert torch.allclose(held[:, 1], reference[:, 1])  # the head's schedule is unchanged
    assert (held[:10, 0] == 0).all()  # the encoder waits, then runs the whole shape over the 20 steps left
    late = lrs(get_scheduler(name, optimizer(), num_warmup_steps=2, num_training_steps=20), 20)
    assert torch.allclose(held[10:, 0], late[:, 0]) and held[12, 0] == 1.0
    with pytest.raises(ValueError, match="head-only phase"):
        build_scheduler(optimizer(), schedule, 0.1, 30, held_steps=30, held_groups={"text.backbone"})


def test_frozen_token_embeddings_stay_pretrained_while_the_rest_of_the_encoder_trains(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__epochs=1, train__eval_test=False, data__max_examples=12,
                         model__encoders__text__freeze_token_embeddings=True)
    trainer = Trainer(config, run_dir=tmp_path / "frozen")
    text = trainer.unwrapped.encoders["text"].model
    tokens = text.get_input_embeddings().weight
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(tokens) not in optimised
    before = _weights(text)
    trainer.fit()
    after = _weights(text)
    token_key = next(k for k, v in text.state_dict().items() if v.data_ptr() == tokens.data_ptr())
    assert torch.equal(after[token_key], before[token_key])
    moved = [k for k in before if k != token_key and not torch.equal(after[k], before[k])]
    assert any("position_embeddings" in k for k in moved) and any("layer.1." in k for k in moved)
    saved = load_file(tmp_path / "frozen" / "best" / "model.safetensors")
    assert torch.equal(saved[f"encoders.text.model.{token_key}"], before[token_key])


@pytest.mark.parametrize("selection, kept", [("best", 1), ("last", 3)])
def test_selection_last_keeps_the_final_epoch_where_best_keeps_the_first_of_equals(demo_tree, tmp_path, selection, kept):
    config = tiny_config(demo_tree, ("text",), train__epochs=3, train__eval_test=False, data__max_examples=8,
                         train__batch_size=4, train__lr=0.0, train__encoder_lr=0.0, train__selection=selection)
    result = Trainer(config, run_dir=tmp_path / selection).fit()
    assert len({h["weighted_f1"] for h in result.history}) == 1  # nothing learns: every epoch scores the same
    assert result.best_epoch == kept
    assert [h["best"] for h in result.history] == [True, selection == "last", selection == "last"]


