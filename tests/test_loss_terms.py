"""Loss terms (train.loss_terms): each term's definition, its place in the trainer's loss, its own option checks,
and a new term registered from outside in one class."""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from mmemo.config import ConfigError, LossTermConfig
from mmemo.data.readers.meld import read_meld_csv
from mmemo.errors import DataError
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.model import EmotionModel
from mmemo.registry import register_loss_term
from mmemo.training.callbacks import MovingAverage
from mmemo.training.loss_terms import LossTerm, aux_label_indices
from mmemo.training.loss_terms.rdrop import stack_twice, symmetric_kl
from mmemo.training.loss_terms.supcon import supervised_contrastive
from mmemo.training.trainer import Trainer
from tests.conftest import tiny_config

SENTIMENTS = ["neutral", "positive", "negative"]


def _loss_and_output_under_the_same_dropout(trainer: Trainer, batch: dict):
    """The trainer's training loss for ``batch``, and the model's own output under the same dropout masks,
    so that a test can rebuild the loss by hand from the output."""
    trainer.model.train()
    torch.manual_seed(3)
    loss = trainer.compute_loss(batch)
    torch.manual_seed(3)
    out = trainer.model(batch["inputs"], batch["present"], batch["labels"], trainer.criterion)
    return loss, out


def test_symmetric_kl_is_zero_only_for_equal_predictions_and_matches_the_definition():
    a, b = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]), torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    p, q = a.softmax(-1), b.softmax(-1)
    kl = lambda x, y: (x * (x / y).log()).sum(-1)  # noqa: E731
    expected = (0.5 * (kl(p, q) + kl(q, p))).mean()
    assert symmetric_kl(a, b).item() == pytest.approx(expected.item(), rel=1e-5)
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item(), rel=1e-6)
    assert symmetric_kl(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift is the same softmax
    assert symmetric_kl(a, b).item() > 0.1


def test_stack_twice_doubles_every_tensor_through_dicts_and_cached_embeddings():
    emb = ModalityEmbedding(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 4))
    batch = {"text": {"input_ids": torch.tensor([[1, 2], [3, 4]])}, "audio": emb}
    twice = stack_twice(batch)
    assert torch.equal(twice["text"]["input_ids"], torch.tensor([[1, 2], [3, 4], [1, 2], [3, 4]]))
    assert isinstance(twice["audio"], ModalityEmbedding)
    assert twice["audio"].seq.shape == (4, 3, 4) and torch.equal(twice["audio"].pooled[2:], emb.pooled)


def test_rdrop_adds_the_disagreement_of_two_dropout_samples_to_the_loss(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False,
                         data__max_examples=8, train__loss_terms=[{"name": "rdrop", "weight": 2.0}])
    trainer = Trainer(config, run_dir=tmp_path / "rdrop")
    batch = next(iter(trainer.train_loader))
    n = len(batch["labels"])
    trainer.model.train()
    torch.manual_seed(3)
    loss = trainer.compute_loss(batch)
    torch.manual_seed(3)  # the same dropout masks, by hand
    out = trainer.model(stack_twice(batch["inputs"]), stack_twice(batch["present"]), stack_twice(batch["labels"]))
    first, second = out.logits[:n], out.logits[n:]
    assert not torch.allclose(first, second)  # dropout differs between the two copies
    ce = 0.5 * (F.cross_entropy(first, batch["labels"]) + F.cross_entropy(second, batch["labels"]))
    kl = symmetric_kl(first, second)
    assert kl.item() > 0
    assert loss.item() == pytest.approx((ce + 2.0 * kl).item(), rel=1e-5)
    result = trainer.fit()  # and a whole run trains with it
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match=r"train.loss_terms\[0\].weight: must be >= 0"):
        tiny_config(demo_tree, ("text",), train__loss_terms=[{"name": "rdrop", "weight": -1.0}])


def test_supervised_contrastive_matches_its_definition_and_rewards_clustered_classes():
    torch.manual_seed(0)
    features, labels = torch.randn(10, 6), torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 2, 4])
    z = F.normalize(features, dim=-1)
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


def test_supcon_adds_the_contrastive_term_on_fused_embeddings_to_the_loss(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False, data__max_examples=12,
                         train__batch_size=8, train__loss_terms=[{"name": "supcon", "weight": 0.5, "temperature": 0.2}])
    trainer = Trainer(config, run_dir=tmp_path / "supcon")
    batch = next(iter(trainer.train_loader))
    assert len(batch["labels"]) == 8 and len(set(batch["labels"].tolist())) < 8  # 7 labels: a same-label pair
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    contrastive = supervised_contrastive(out.fused, batch["labels"], 0.2)
    assert contrastive.item() > 0
    assert loss.item() == pytest.approx((out.loss + 0.5 * contrastive).item(), rel=1e-5)
    result = trainer.fit()  # and a whole run trains with it
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match=r"train.loss_terms\[0\].temperature: must be > 0"):
        tiny_config(demo_tree, ("text",), train__loss_terms=[{"name": "supcon", "temperature": 0.0}])
    with pytest.raises(ConfigError, match=r"train.loss_terms\[0\].tau: unknown key; allowed: name, weight, temperature"):
        tiny_config(demo_tree, ("text",), train__loss_terms=[{"name": "supcon", "tau": 0.1}])
    with pytest.raises(ConfigError, match=r"train.loss_terms\[1\]: supcon is listed twice"):
        tiny_config(demo_tree, ("text",), train__loss_terms=[{"name": "supcon"}, {"name": "supcon"}])


def test_distill_pulls_the_logits_towards_the_moving_average(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text", "audio"), train__epochs=1, train__eval_test=False, data__max_examples=12,
                         train__batch_size=8, train__ema_decay=0.9, train__loss_terms=[{"name": "distill", "weight": 2.0}])
    trainer = Trainer(config, run_dir=tmp_path / "distill")
    average = trainer.callback(MovingAverage).module
    with torch.no_grad():  # a teacher that differs from the model
        for p in average.head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    batch = next(iter(trainer.train_loader))
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    average.eval()
    with torch.no_grad():
        teacher = average(batch["inputs"], batch["present"]).logits
    term = F.mse_loss(out.logits, teacher)
    assert term.item() > 1e-3
    assert loss.item() == pytest.approx((out.loss + 2.0 * term).item(), rel=1e-5)
    result = trainer.fit()  # and a whole run trains with it
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match=r"train.loss_terms\[0\]: the teacher of distill is the moving average"):
        tiny_config(demo_tree, ("text",), train__loss_terms=[{"name": "distill"}])


def test_l2_adds_half_the_squared_norm_of_the_trainable_weight_matrices(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__epochs=1, train__eval_test=False, data__max_examples=8,
                         train__batch_size=4, train__loss_terms=[{"name": "l2", "weight": 0.01}])
    trainer = Trainer(config, run_dir=tmp_path / "l2")
    batch = next(iter(trainer.train_loader))
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    matrices = [p for p in trainer.model.parameters() if p.requires_grad and p.ndim > 1]
    norm = sum(float((p.detach() ** 2).sum()) for p in matrices)
    assert len(matrices) > 4 and norm > 1
    assert loss.item() == pytest.approx(out.loss.item() + 0.005 * norm, rel=1e-5)


def test_aux_heads_train_a_sentiment_head_whose_loss_joins_the_emotion_loss(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), train__epochs=2, train__eval_test=False, data__max_examples=16,
                         train__batch_size=8, model__aux_labels={"sentiment": SENTIMENTS},
                         train__loss_terms=[{"name": "aux_heads", "weight": 0.7}])
    trainer = Trainer(config, run_dir=tmp_path / "aux")
    train_rows = trainer.splits["train"]
    sentiments = [ex.meta["sentiment"] for ex in train_rows]  # the CSV's Sentiment column
    assert len(set(sentiments)) == 3
    (term,) = trainer.loss_terms
    assert term.targets["sentiment"].tolist() == [SENTIMENTS.index(s.lower()) for s in sentiments]

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
    # with aux heads and no aux_heads term listed, the term joins at its default weight
    default = Trainer(tiny_config(demo_tree, ("text",), data__max_examples=8, model__aux_labels={"sentiment": SENTIMENTS}),
                      run_dir=tmp_path / "default")
    assert [(t.config.name, t.weight) for t in default.loss_terms] == [("aux_heads", 0.5)]


def test_aux_labels_name_the_row_with_a_value_outside_their_classes(demo_tree):
    examples = read_meld_csv(demo_tree / "train_sent_emo.csv", "train", None)
    assert aux_label_indices({}, examples) == {}
    examples[2].meta["sentiment"] = "meh"
    with pytest.raises(DataError, match=r"train_sent_emo.csv: line 4: model.aux_labels.sentiment: 'meh'; expected one of"):
        aux_label_indices({"sentiment": SENTIMENTS}, examples)
    del examples[2].meta["sentiment"]
    with pytest.raises(DataError, match="line 4: model.aux_labels.sentiment: no sentiment field"):
        aux_label_indices({"sentiment": SENTIMENTS}, examples)
    with pytest.raises(ConfigError, match="model.aux_labels.sentiment"):
        tiny_config(demo_tree, ("text",), model__aux_labels={"sentiment": ["neutral"]})


@dataclass
class _ConfidenceConfig(LossTermConfig):
    name: str = "test_confidence"
    floor: float = 0.5


@register_loss_term("test_confidence", config=_ConfidenceConfig)
class _ConfidencePenalty(LossTerm):
    """A term written outside mmemo: the mean probability mass above ``floor`` on the predicted class."""

    def __call__(self, batch, outputs, model):
        return (outputs.logits.float().softmax(-1).max(-1).values - self.config.floor).clamp_min(0).mean()


def test_a_new_loss_term_is_one_registered_class_named_in_the_config(demo_tree, tmp_path):
    config = tiny_config(demo_tree, ("text",), data__max_examples=8, train__eval_test=False,
                         train__loss_terms=[{"name": "test_confidence", "weight": 3.0, "floor": 0.1}])
    assert config.train.loss_terms[0].floor == 0.1
    trainer = Trainer(config, run_dir=tmp_path / "custom")
    batch = next(iter(trainer.train_loader))
    loss, out = _loss_and_output_under_the_same_dropout(trainer, batch)
    penalty = (out.logits.softmax(-1).max(-1).values - 0.1).clamp_min(0).mean()
    assert penalty.item() > 0 and loss.item() == pytest.approx((out.loss + 3.0 * penalty).item(), rel=1e-5)
    with pytest.raises(ConfigError, match=r"train.loss_terms\[0\].name: unknown loss term 'nope'; allowed: .*test_confidence"):
        tiny_config(demo_tree, ("text",), train__loss_terms=[{"name": "nope"}])
