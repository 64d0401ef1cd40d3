"""Training that scales: exact resume, atomic checkpoints, guard rails, precision, accumulation, seeding,
class imbalance, schedules, early stopping and logs."""

import csv
import json
import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from mmemo.cli import main
from mmemo.config import ConfigError, load_config
from mmemo.data.readers.meld import read_meld_csv
from mmemo.data.tables import DataError
from mmemo.errors import CheckpointError
from mmemo.labels import LabelError
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.model import EmotionModel, load_weights, replace_dir
from mmemo.training import checkpoint as ckpt
from mmemo.training.adversarial import FastGradientMethod
from mmemo.training.losses import (
    FocalLoss,
    balanced_class_weights,
    build_criterion,
    stack_twice,
    supervised_contrastive,
    symmetric_kl,
)
from mmemo.training.schedule import build_scheduler
from mmemo.training.trainer import (
    EpochSampler,
    NonFiniteLossError,
    Trainer,
    _seed_worker,
    aux_label_indices,
    last_checkpoint,
    train,
)
from tests.conftest import tiny_config, tiny_overrides


class Killed(Exception):
    """Stands in for the process being killed."""


def _kill_after_checkpoint(trainer: Trainer, step: int) -> None:
    save = trainer._save_checkpoint

    def save_then_die():
        save()
        if trainer.state["global_step"] == step:
            raise Killed

    trainer._save_checkpoint = save_then_die


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

    killed = Trainer(config, run_dir=tmp_path / "killed")
    _kill_after_checkpoint(killed, step=3)  # 2 steps per epoch: in the middle of epoch 2
    with pytest.raises(Killed):
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


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__checkpoint_every_steps=1, train__epochs=2)
    trainer = Trainer(config, run_dir=tmp_path / "run")
    criterion = trainer.criterion

    def poisoned(logits, labels):
        loss = criterion(logits, labels)
        return loss * float("nan") if trainer.state["global_step"] == 2 else loss

    trainer.criterion = poisoned
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 \(epoch 1, batch 3\).*last good checkpoint is .*last"):
        trainer.fit()
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.unwrapped.parameters())


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


def test_head_only_epochs_fit_the_head_on_untouched_encoders_then_train_everything(demo_tree, tmp_path):
    overrides = dict(train__epochs=3, train__head_only_epochs=1, train__eval_test=False, data__max_examples=12,
                     train__checkpoint_every_steps=1)  # 3 steps an epoch
    config = tiny_config(demo_tree, ("text", "audio"), **overrides)
    trainer = Trainer(config, run_dir=tmp_path / "straight")
    assert trainer.head_only_steps == 3
    start = _weights(trainer.unwrapped)
    seen, modes = [], []
    evaluate = trainer.evaluate_split
    trainer.evaluate_split = lambda split: (seen.append(_weights(trainer.unwrapped)), evaluate(split))[1]
    forward = trainer.unwrapped.encoders["text"].forward

    def record(*args, **kwargs):
        out = forward(*args, **kwargs)
        if trainer.unwrapped.training:  # a training forward, not an evaluation
            modes.append((trainer.unwrapped.encoders["text"].training, out.pooled.requires_grad))
        return out

    trainer.unwrapped.encoders["text"].forward = record
    trainer.fit()
    encoder = [k for k in start if k.startswith("encoders.") and start[k].is_floating_point()]
    head = [k for k in start if k.startswith(("fusion.", "head."))]
    assert all(torch.equal(seen[0][k], start[k]) for k in encoder)  # not one encoder weight moved in epoch 1
    assert any(not torch.equal(seen[0][k], start[k]) for k in head)
    for m in ("text", "audio"):
        assert any(not torch.equal(seen[1][k], start[k]) for k in encoder if k.startswith(f"encoders.{m}."))
    # training forwards: the phase's three without a graph and in eval mode (no dropout), then trained
    assert modes[:3] == [(False, False)] * 3 and modes[3:] == [(True, True)] * 6
    backbone = [g for g in trainer.optimizer.param_groups if g["name"] == "text.backbone"][0]
    assert backbone["lr"] == 0.0  # the encoders' own decay ended with training
    # killed inside the phase and resumed: the same run
    killed = Trainer(config, run_dir=tmp_path / "killed")
    _kill_after_checkpoint(killed, step=2)
    with pytest.raises(Killed):
        killed.fit()
    train(None, resume=tmp_path / "killed")
    assert _history(tmp_path / "killed") == _history(tmp_path / "straight")
    for bad in (2, -1):
        with pytest.raises(ConfigError, match="train.head_only_epochs"):
            tiny_config(demo_tree, ("text",), train__epochs=2, train__head_only_epochs=bad)


def test_early_stopping_tensorboard_and_metrics_jsonl(demo_tree, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # no learning at all: the dev metric never improves after epoch 1
    config = tiny_config(demo_tree, ("text",), train__epochs=5, train__lr=0.0, train__encoder_lr=0.0,
                         train__early_stopping_patience=2, train__log_every_steps=1, train__eval_test=False)
    result = train(config, run_dir=tmp_path / "run")
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.best_epoch == 1 and result.epochs == 3
    assert result.history == [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0  # a stopped run stays stopped when resumed
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/epoch_loss", "lr/fusion_head", "lr/text.backbone", "dev/weighted_f1", "dev/uar"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 13))
    assert [e.value for e in events.Scalars("dev/weighted_f1")] == pytest.approx([h["weighted_f1"] for h in result.history])


def test_moving_average_of_the_weights_is_what_is_evaluated_and_saved(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False,
                         data__max_examples=12, train__ema_decay=0.6)  # 3 steps
    trainer = Trainer(config, run_dir=tmp_path / "ema")
    seen = []
    update = trainer.ema.update_parameters
    trainer.ema.update_parameters = lambda model: (seen.append(_weights(model)), update(model))
    result = trainer.fit()
    assert len(seen) == 3  # once per optimiser step
    saved = load_file(tmp_path / "ema" / "best" / "model.safetensors")
    raw = _weights(trainer.unwrapped)
    changed = [k for k in saved if raw[k].is_floating_point() and not torch.equal(seen[0][k], seen[-1][k])]
    assert changed
    for k in changed:  # the first step's weights, then ema = 0.6 ema + 0.4 new
        expected = 0.6 * (0.6 * seen[0][k] + 0.4 * seen[1][k]) + 0.4 * seen[2][k]
        assert torch.allclose(saved[k], expected, atol=1e-6), k
    assert any(not torch.allclose(saved[k], raw[k], atol=1e-5) for k in changed)  # not the last step's weights
    averaged = trainer.predict_split("dev")[2]  # what was reported: the saved average's predictions
    again = Trainer(config, run_dir=tmp_path / "ema2")
    load_weights(again.unwrapped, tmp_path / "ema" / "best")
    again.ema = None
    assert again.predict_split("dev")[2] == averaged
    trainer.ema = None
    assert trainer.predict_split("dev")[2] != averaged  # the raw weights predict otherwise
    assert result.best_epoch == 1
    with pytest.raises(ConfigError, match="train.ema_decay"):
        tiny_config(demo_tree, ("text",), train__ema_decay=1.5)


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


def test_symmetric_kl_is_zero_only_for_equal_predictions_and_matches_the_definition():
    a, b = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]), torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    p, q = a.softmax(-1), b.softmax(-1)
    kl = lambda x, y: (x * (x / y).log()).sum(-1)  # noqa: E731
    expected = (0.5 * (kl(p, q) + kl(q, p))).mean()
    assert symmetric_kl(a, b).item() == pytest.approx(expected.item(), rel=1e-5)
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item(), rel=1e-6)
    assert symmetric_kl(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift is the same softmax
    assert symmetric_kl(a, b).item() > 0.1


def test_supervised_contrastive_matches_its_definition_and_rewards_clustered_classes():
    torch.manual_seed(0)
    features, labels = torch.randn(10, 6), torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 2, 4])
    z = torch.nn.functional.normalize(features, dim=-1)
    terms = []
    for i in range(10):  # by hand: anchors 6 and 9 have no positive and are left out
        positives = [p for p in range(10) if p != i and labels[p] == labels[i]]
        if positives:
            others = torch.stack([z[i] @ z[a] / 0.3 for a in range(10) if a != i])
            terms.append(-sum((z[i] @ z[p] / 0.3 - others.logsumexp(0)) for p in positives) / len(positives))
    assert supervised_contrastive(features, labels, 0.3).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    centres = torch.eye(6)[:5] * 5
    clustered = centres[labels] + 0.1 * torch.randn(10, 6)
    assert supervised_contrastive(clustered, labels).item() < supervised_contrastive(features, labels).item() - 0.5
    assert supervised_contrastive(features, torch.arange(10)).item() == 0.0  # no positive pair in the batch


def _loss_and_output_under_the_same_dropout(trainer: Trainer, batch: dict):
    """The trainer's training loss for ``batch``, and the model's own output under the same dropout masks,
    so that a test can rebuild the loss by hand from the output."""
    trainer.model.train()
    torch.manual_seed(3)
    loss = trainer._training_loss(batch)
    torch.manual_seed(3)
    out = trainer.model(batch["inputs"], batch["present"], batch["labels"], trainer.criterion)
    return loss, out


def test_supcon_adds_the_contrastive_term_on_fused_embeddings_to_the_loss(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False,
                         data__max_examples=12, train__batch_size=8, train__supcon_weight=0.5,
                         train__supcon_temperature=0.2)
    trainer = Trainer(config, run_dir=tmp_path / "supcon")
    batch = next(iter(trainer.train_loader))
    assert len(batch["labels"]) == 8 and len(set(batch["labels"].tolist())) < 8  # 7 labels: a same-label pair
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    contrastive = supervised_contrastive(out.fused, batch["labels"], 0.2)
    assert contrastive.item() > 0
    assert loss.item() == pytest.approx((out.loss + 0.5 * contrastive).item(), rel=1e-5)
    result = trainer.fit()  # and a whole run trains with it
    assert math.isfinite(result.history[0]["train_loss"])
    for key, value in (("supcon_weight", -0.1), ("supcon_temperature", 0.0)):
        with pytest.raises(ConfigError, match=f"train.{key}"):
            tiny_config(demo_tree, ("text",), **{f"train__{key}": value})


def test_distill_weight_pulls_the_logits_towards_the_moving_average(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False,
                         data__max_examples=12, train__batch_size=8, train__ema_decay=0.9,
                         train__distill_weight=2.0)
    trainer = Trainer(config, run_dir=tmp_path / "distill")
    with torch.no_grad():  # a teacher that differs from the model
        for p in trainer.ema.module.head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    batch = next(iter(trainer.train_loader))
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    trainer.ema.module.eval()
    with torch.no_grad():
        teacher = trainer.ema.module(batch["inputs"], batch["present"]).logits
    term = torch.nn.functional.mse_loss(out.logits, teacher)
    assert term.item() > 1e-3
    assert loss.item() == pytest.approx((out.loss + 2.0 * term).item(), rel=1e-5)
    result = trainer.fit()  # and a whole run trains with it
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match="train.distill_weight"):
        tiny_config(demo_tree, ("text",), train__distill_weight=-1.0, train__ema_decay=0.9)
    with pytest.raises(ConfigError, match="train.ema_decay"):
        tiny_config(demo_tree, ("text",), train__distill_weight=1.0)


def test_l2_penalty_adds_half_the_squared_norm_of_the_trainable_weight_matrices(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__epochs=1, train__eval_test=False, data__max_examples=8,
                         train__batch_size=4, train__l2_penalty=0.01)
    trainer = Trainer(config, run_dir=tmp_path / "l2")
    batch = next(iter(trainer.train_loader))
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    matrices = [p for p in trainer.model.parameters() if p.requires_grad and p.ndim > 1]
    norm = sum(float((p.detach() ** 2).sum()) for p in matrices)
    assert len(matrices) > 4 and norm > 1
    assert loss.item() == pytest.approx(out.loss.item() + 0.005 * norm, rel=1e-5)
    with pytest.raises(ConfigError, match="train.l2_penalty"):
        tiny_config(demo_tree, ("text",), train__l2_penalty=-0.1)


def test_fast_gradient_method_moves_embeddings_by_epsilon_along_their_gradient_and_puts_them_back():
    weight = torch.nn.Parameter(torch.randn(10, 4))
    fgm = FastGradientMethod([weight], epsilon=0.5)
    original = weight.detach().clone()
    with fgm.perturbed() as moved:  # no gradient yet: nothing to follow
        assert not moved and torch.equal(weight, original)
    (weight[[1, 3]] * torch.arange(8.0).view(2, 4)).sum().backward()
    grad = weight.grad.clone()
    with fgm.perturbed() as moved:
        assert moved
        delta = weight.detach() - original
        assert torch.allclose(delta, 0.5 * grad / grad.norm(), atol=1e-6)
        assert torch.linalg.vector_norm(delta).item() == pytest.approx(0.5, rel=1e-5)
        assert torch.equal(delta[[0, 2, 4]], torch.zeros(3, 4))  # rows of tokens the batch lacks stay
    assert torch.equal(weight, original)  # put back exactly, not by subtraction
    before = fgm.gradients()  # gradient accumulation: a second batch adds to the first one's gradient
    (weight[[5]] * 2.0).sum().backward()
    with fgm.perturbed(before):
        delta = weight.detach() - original
        assert torch.allclose(delta[5], torch.full((4,), 0.25), atol=1e-6)  # along the second batch's gradient alone
        assert torch.equal(delta[[1, 3]], torch.zeros(2, 4))
    with pytest.raises(ValueError, match="epsilon"):
        FastGradientMethod([weight], 0.0)


def test_adversarial_epsilon_adds_the_loss_at_the_worst_nearby_token_embeddings(demo_tree, tmp_path, monkeypatch):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False, data__max_examples=8,
                         train__batch_size=4, train__adversarial_epsilon=1.0)
    trainer = Trainer(config, run_dir=tmp_path / "fgm")
    words = trainer.unwrapped.encoders["text"].model.get_input_embeddings().weight
    assert trainer.fgm.embeddings == [words]  # the text encoder's token matrix, not the audio encoder's
    batch = next(iter(trainer.train_loader))
    trainer.model.train()
    torch.manual_seed(3)
    clean = trainer._training_loss(batch)
    clean.backward()
    original = words.detach().clone()
    with trainer.fgm.perturbed() as moved:
        assert moved
        torch.manual_seed(3)  # the same dropout masks: only the embeddings differ
        adversarial = trainer._training_loss(batch)
        assert torch.linalg.vector_norm(words.detach() - original).item() == pytest.approx(1.0, rel=1e-4)
    assert adversarial.item() > clean.item()  # a step up the loss surface
    assert torch.equal(words, original)
    trainer.optimizer.zero_grad(set_to_none=True)

    calls = []
    loss_of = trainer._training_loss
    monkeypatch.setattr(trainer, "_training_loss", lambda b: calls.append(1) or loss_of(b))
    result = trainer.fit()  # each step: a clean and an adversarial pass
    assert len(calls) == 2 * result.history[-1]["step"] and math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match="train.adversarial_epsilon"):
        tiny_config(demo_tree, ("text",), train__adversarial_epsilon=-1.0)
    for modalities, extra in ((("audio",), {}), (("text",), {"model__encoders__text__freeze_token_embeddings": True})):
        frozen = tiny_config(demo_tree, modalities, train__adversarial_epsilon=1.0, data__max_examples=8, **extra)
        with pytest.raises(ConfigError, match="train.adversarial_epsilon: perturbs trainable token embeddings"):
            Trainer(frozen, run_dir=tmp_path / f"fgm-{len(extra)}")


@pytest.mark.parametrize("selection, kept", [("best", 1), ("last", 3)])
def test_selection_last_keeps_the_final_epoch_where_best_keeps_the_first_of_equals(demo_tree, tmp_path, selection, kept):
    config = tiny_config(demo_tree, ("text",), train__epochs=3, train__eval_test=False, data__max_examples=8,
                         train__batch_size=4, train__lr=0.0, train__encoder_lr=0.0, train__selection=selection)
    result = Trainer(config, run_dir=tmp_path / selection).fit()
    assert len({h["weighted_f1"] for h in result.history}) == 1  # nothing learns: every epoch scores the same
    assert result.best_epoch == kept
    assert [h["best"] for h in result.history] == [True, selection == "last", selection == "last"]


SENTIMENTS = ["neutral", "positive", "negative"]


def test_aux_labels_add_a_trained_sentiment_head_whose_loss_joins_the_emotion_loss(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__epochs=2, train__eval_test=False, data__max_examples=16,
                         train__batch_size=8, model__aux_labels={"sentiment": SENTIMENTS}, train__aux_weight=0.7)
    trainer = Trainer(config, run_dir=tmp_path / "aux")
    train_rows = trainer.splits["train"]
    sentiments = [ex.meta["sentiment"] for ex in train_rows]  # the CSV's Sentiment column
    assert len(set(sentiments)) == 3
    assert trainer.aux_targets["sentiment"].tolist() == [SENTIMENTS.index(s.lower()) for s in sentiments]

    batch = next(iter(trainer.train_loader))
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    target = torch.tensor([SENTIMENTS.index(train_rows[i].meta["sentiment"].lower()) for i in batch["index"]])
    aux = F.cross_entropy(out.aux_logits["sentiment"], target)
    assert out.aux_logits["sentiment"].shape == (8, 3) and aux.item() > 0
    assert loss.item() == pytest.approx((out.loss + 0.7 * aux).item(), rel=1e-5)

    before = trainer.unwrapped.aux_heads["sentiment"][-1].weight.detach().clone()
    trainer.fit()
    assert not torch.equal(before, trainer.unwrapped.aux_heads["sentiment"][-1].weight)
    model, saved, labels = EmotionModel.from_pretrained(tmp_path / "aux" / "best")  # the head travels with the model
    assert saved.model.aux_labels == {"sentiment": SENTIMENTS} and len(labels) == 7
    with torch.inference_mode():  # and predictions come from the emotion head alone
        pred = model(batch["inputs"], batch["present"])
    assert pred.probs.shape == (8, 7) and pred.aux_logits == {}


def test_aux_labels_name_the_row_with_a_value_outside_their_classes(demo_tree, tmp_path):
    examples = read_meld_csv(demo_tree / "train_sent_emo.csv", "train", None)
    assert aux_label_indices({}, examples) == {}
    examples[2].meta["sentiment"] = "meh"
    with pytest.raises(DataError, match=r"train_sent_emo.csv: line 4: model.aux_labels.sentiment: 'meh'; expected one of"):
        aux_label_indices({"sentiment": SENTIMENTS}, examples)
    del examples[2].meta["sentiment"]
    with pytest.raises(DataError, match="line 4: model.aux_labels.sentiment: no sentiment field"):
        aux_label_indices({"sentiment": SENTIMENTS}, examples)
    for bad, key in (({"sentiment": ["neutral"]}, "model.aux_labels.sentiment"), (-1.0, "train.aux_weight")):
        extra = {"model__aux_labels": bad} if key.startswith("model") else {"train__aux_weight": bad}
        with pytest.raises(ConfigError, match=key):
            tiny_config(demo_tree, ("text",), **extra)


def test_stack_twice_doubles_every_tensor_through_dicts_and_cached_embeddings():
    emb = ModalityEmbedding(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 4))
    batch = {"text": {"input_ids": torch.tensor([[1, 2], [3, 4]])}, "audio": emb}
    twice = stack_twice(batch)
    assert torch.equal(twice["text"]["input_ids"], torch.tensor([[1, 2], [3, 4], [1, 2], [3, 4]]))
    assert isinstance(twice["audio"], ModalityEmbedding)
    assert twice["audio"].seq.shape == (4, 3, 4) and torch.equal(twice["audio"].pooled[2:], emb.pooled)


def test_rdrop_adds_the_disagreement_of_two_dropout_samples_to_the_loss(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False,
                         data__max_examples=8, train__rdrop_alpha=2.0)
    trainer = Trainer(config, run_dir=tmp_path / "rdrop")
    batch = next(iter(trainer.train_loader))
    n = len(batch["labels"])
    trainer.model.train()
    torch.manual_seed(3)
    loss = trainer._training_loss(batch)
    torch.manual_seed(3)  # the same dropout masks, by hand
    out = trainer.model(stack_twice(batch["inputs"]), stack_twice(batch["present"]), stack_twice(batch["labels"]))
    first, second = out.logits[:n], out.logits[n:]
    assert not torch.allclose(first, second)  # dropout differs between the two copies
    ce = 0.5 * (torch.nn.functional.cross_entropy(first, batch["labels"])
                + torch.nn.functional.cross_entropy(second, batch["labels"]))
    kl = symmetric_kl(first, second)
    assert kl.item() > 0
    assert loss.item() == pytest.approx((ce + 2.0 * kl).item(), rel=1e-5)
    result = trainer.fit()  # and a whole run trains with it
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match="train.rdrop_alpha"):
        tiny_config(demo_tree, ("text",), train__rdrop_alpha=-1.0)
