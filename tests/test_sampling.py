"""Length bucketing: a permutation whose batches hold similar lengths, and a trainer that uses it."""

import pytest
import torch

from mmemo.config import ConfigError
from mmemo.data.examples import Example, Turn
from mmemo.training.sampling import EpochSampler, bucketed_order, text_length
from mmemo.training.trainer import Trainer
from tests.conftest import tiny_config


def _spreads(order, lengths, batch_size):
    """Max minus min length of each batch a DataLoader would cut from ``order``."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]


def test_bucketed_order_is_a_permutation_of_homogeneous_batches():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1003,), generator=g).tolist()  # not the global RNG: other tests move it
    order = bucketed_order(lengths, 16, g, pool_batches=10)
    assert sorted(order) == list(range(1003))
    random_order = torch.randperm(1003, generator=g).tolist()
    bucketed, shuffled = _spreads(order, lengths, 16), _spreads(random_order, lengths, 16)
    assert sum(bucketed) < 0.2 * sum(shuffled)
    # 1003 = 62 * 16 + 11: the short batch comes last, so no batch a DataLoader cuts straddles two
    # buckets. A pool of 160 sorted lengths in 1..199 gives each batch of 16 a spread near 20; only the
    # three batches of the last pool (43 lengths) spread wider, near 75.
    assert sum(spread >= 50 for spread in bucketed) <= 3, bucketed


def test_batch_order_is_shuffled_and_reproducible():
    lengths = list(range(640))
    a = bucketed_order(lengths, 32, torch.Generator().manual_seed(1), pool_batches=20)
    b = bucketed_order(lengths, 32, torch.Generator().manual_seed(1), pool_batches=20)
    c = bucketed_order(lengths, 32, torch.Generator().manual_seed(2), pool_batches=20)
    assert a == b and a != c
    firsts = [lengths[a[i]] for i in range(0, 640, 32)]
    assert firsts != sorted(firsts)  # not simply shortest-first


def test_epoch_sampler_buckets_by_text_length_and_changes_with_epoch():
    lengths = [len("x" * (i % 97)) for i in range(500)]
    sampler = EpochSampler(500, seed=0, lengths=lengths, batch_size=25)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(first) == list(range(500))


def test_text_length_counts_context():
    ex = Example(id="a", text="hello", context_before=(Turn("Ross", "hi there"),), context_after=(Turn(None, "bye"),))
    assert text_length(ex) == len("hello") + len("hi there") + len("Ross") + len("bye")


def test_bucket_pool_batches_reaches_the_sampler_and_larger_pools_give_more_alike_batches(demo_tree, tmp_path):
    lengths = torch.randint(1, 400, (2000,), generator=torch.Generator().manual_seed(0)).tolist()
    narrow = EpochSampler(2000, seed=0, lengths=lengths, batch_size=16, pool_batches=2)
    wide = EpochSampler(2000, seed=0, lengths=lengths, batch_size=16, pool_batches=1000)
    assert sum(_spreads(list(wide), lengths, 16)) < 0.2 * sum(_spreads(list(narrow), lengths, 16))

    config = tiny_config(demo_tree, ("text",), train__sampler="length_bucketed", train__bucket_pool_batches=7)
    assert Trainer(config, run_dir=tmp_path / "run").train_sampler.pool_batches == 7
    with pytest.raises(ConfigError, match="train.bucket_pool_batches: must be >= 1"):
        tiny_config(demo_tree, ("text",), train__sampler="length_bucketed", train__bucket_pool_batches=0)
