"""Training callbacks: the hook protocol and its state in checkpoints, and each built-in callback (moving average,
adversarial training, head-only phase, early stopping, logs, the non-finite loss guard)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mmemo.cli import main
from mmemo.config import ConfigError
from mmemo.errors import NonFiniteLossError
from mmemo.models.model import load_weights
from mmemo.training.callbacks import (
    AdversarialTraining,
    Callback,
    FastGradientMethod,
    HeadOnlyPhase,
    MovingAverage,
    build_callbacks,
)
from mmemo.training.trainer import Trainer, train
from tests.conftest import KillAfterCheckpoint, Killed, tiny_config


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _history(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class Recorder(Callback):
    """Counts hooks, keeps a tensor that changes every step, and kills the run after a given step's checkpoint."""

    name = "recorder"

    def __init__(self, kill_at: int | None = None):
        self.calls: list[str] = []
        self.steps = 0
        self.trace = torch.zeros(3)
        self.kill_at = kill_at

    def setup(self, trainer):
        self.calls.append("setup")

    def on_train_start(self, trainer):
        self.calls.append("train_start")

    def on_epoch_start(self, trainer):
        self.calls.append("epoch_start")

    def on_loss(self, trainer, loss):
        self.calls.append("loss")

    def on_before_backward(self, trainer, batch):
        self.calls.append("before_backward")

    def on_after_backward(self, trainer, batch):
        assert any(p.grad is not None for p in trainer.model.parameters())
        self.calls.append("after_backward")

    def on_step_end(self, trainer):
        self.calls.append("step_end")
        self.steps += 1
        self.trace = self.trace * 0.5 + torch.randn(3)  # draws on the RNG, which the checkpoint must restore

    def on_evaluate_start(self, trainer):
        self.calls.append("evaluate_start")

    def on_evaluate(self, trainer, record):
        self.calls.append(f"evaluate:{record['epoch']}")

    def on_evaluate_end(self, trainer):
        self.calls.append("evaluate_end")

    def on_epoch_end(self, trainer):
        self.calls.append("epoch_end")
        if trainer.state["global_step"] == self.kill_at:
            raise Killed

    def on_train_end(self, trainer):
        self.calls.append("train_end")

    def state_dict(self):
        return {"steps": self.steps, "trace": self.trace}

    def load_state_dict(self, state):
        self.steps, self.trace = state["steps"], state["trace"]


def test_hooks_run_in_order_and_a_callbacks_state_survives_a_resume(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__epochs=2, train__eval_test=False, data__max_examples=8)  # 2 steps
    recorder = Recorder()
    train(config, run_dir=tmp_path / "straight", callbacks=[recorder])
    step = ["before_backward", "loss", "after_backward", "step_end"]
    epoch = ["epoch_start", *step, *step, "evaluate_start", "evaluate:{}", "evaluate_end", "epoch_end"]
    assert recorder.calls == ["setup", "train_start", *[c.format(1) for c in epoch], *[c.format(2) for c in epoch],
                              "train_end"]

    with pytest.raises(Killed):
        train(config, run_dir=tmp_path / "killed", callbacks=[Recorder(kill_at=2)])
    resumed = Recorder()
    train(None, resume=tmp_path / "killed", callbacks=[resumed])
    assert resumed.steps == recorder.steps == 4 and torch.equal(resumed.trace, recorder.trace)
    assert _history(tmp_path / "killed") == _history(tmp_path / "straight")


def test_build_callbacks_makes_what_the_config_turns_on():
    plain = [type(c).__name__ for c in build_callbacks(tiny_config(None, ("text",)))]
    assert plain == ["NonFiniteLossGuard", "MetricsLog", "TensorBoardLog", "Checkpointing"]
    every = tiny_config(None, ("text",), train__epochs=3, train__ema_decay=0.9, train__adversarial_epsilon=1.0,
                        train__head_only_epochs=1, train__early_stopping_patience=2)
    assert [type(c).__name__ for c in build_callbacks(every)] == [
        "NonFiniteLossGuard", "HeadOnlyPhase", "AdversarialTraining", "MovingAverage", "MetricsLog", "TensorBoardLog",
        "EarlyStopping", "Checkpointing"]


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


def test_moving_average_of_the_weights_is_what_is_evaluated_and_saved(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False,
                         data__max_examples=12, train__ema_decay=0.6)  # 3 steps
    trainer = Trainer(config, run_dir=tmp_path / "ema")
    average = trainer.callback(MovingAverage).average
    seen = []
    update = average.update_parameters
    average.update_parameters = lambda model: (seen.append(_weights(model)), update(model))
    result = trainer.fit()
    assert len(seen) == 3  # once per optimiser step
    saved = load_file(tmp_path / "ema" / "best" / "model.safetensors")
    raw = seen[-1]  # the weights training ended with
    changed = [k for k in saved if raw[k].is_floating_point() and not torch.equal(seen[0][k], seen[-1][k])]
    assert changed
    for k in changed:  # the first step's weights, then ema = 0.6 ema + 0.4 new
        expected = 0.6 * (0.6 * seen[0][k] + 0.4 * seen[1][k]) + 0.4 * seen[2][k]
        assert torch.allclose(saved[k], expected, atol=1e-6), k
    assert any(not torch.allclose(saved[k], raw[k], atol=1e-5) for k in changed)  # not the last step's weights
    averaged = trainer.predict_split("dev")[2]  # after training the model holds the saved average
    again = Trainer(config, run_dir=tmp_path / "ema2")
    load_weights(again.unwrapped, tmp_path / "ema" / "best")
    assert again.predict_split("dev")[2] == averaged
    again.unwrapped.load_state_dict(raw)
    assert again.predict_split("dev")[2] != averaged  # the raw weights predict otherwise
    assert result.best_epoch == 1 and result.dev["n"] == len(averaged)
    with pytest.raises(ConfigError, match="train.ema_decay"):
        tiny_config(demo_tree, ("text",), train__ema_decay=1.5)


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
    fgm = trainer.callback(AdversarialTraining).fgm
    words = trainer.unwrapped.encoders["text"].model.get_input_embeddings().weight
    assert fgm.embeddings == [words]  # the text encoder's token matrix, not the audio encoder's
    batch = next(iter(trainer.train_loader))
    trainer.model.train()
    torch.manual_seed(3)
    clean = trainer.compute_loss(batch)
    clean.backward()
    original = words.detach().clone()
    with fgm.perturbed() as moved:
        assert moved
        torch.manual_seed(3)  # the same dropout masks: only the embeddings differ
        adversarial = trainer.compute_loss(batch)
        assert torch.linalg.vector_norm(words.detach() - original).item() == pytest.approx(1.0, rel=1e-4)
    assert adversarial.item() > clean.item()  # a step up the loss surface
    assert torch.equal(words, original)
    trainer.optimizer.zero_grad(set_to_none=True)

    calls = []
    loss_of = trainer.compute_loss
    monkeypatch.setattr(trainer, "compute_loss", lambda b: calls.append(1) or loss_of(b))
    result = trainer.fit()  # each step: a clean and an adversarial pass
    assert len(calls) == 2 * result.history[-1]["step"] and math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match="train.adversarial_epsilon"):
        tiny_config(demo_tree, ("text",), train__adversarial_epsilon=-1.0)
    for modalities, extra in ((("audio",), {}), (("text",), {"model__encoders__text__freeze_token_embeddings": True})):
        frozen = tiny_config(demo_tree, modalities, train__adversarial_epsilon=1.0, data__max_examples=8, **extra)
        with pytest.raises(ConfigError, match="train.adversarial_epsilon: perturbs trainable token embeddings"):
            Trainer(frozen, run_dir=tmp_path / f"fgm-{len(extra)}")


def test_head_only_epochs_fit_the_head_on_untouched_encoders_then_train_everything(demo_tree, tmp_path):
    overrides = dict(train__epochs=3, train__head_only_epochs=1, train__eval_test=False, data__max_examples=12,
                     train__checkpoint_every_steps=1)  # 3 steps an epoch
    config = tiny_config(demo_tree, ("text", "audio"), **overrides)
    trainer = Trainer(config, run_dir=tmp_path / "straight")
    assert trainer.callback(HeadOnlyPhase).steps == 3
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
    with pytest.raises(Killed):
        train(config, run_dir=tmp_path / "killed", callbacks=[KillAfterCheckpoint(step=2)])
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
