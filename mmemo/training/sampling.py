"""Length bucketing: batches of similar-length examples, so dynamic padding pads little.

A random MELD batch of 32 utterances pads to its longest (about 3x the mean length), and a
transformer's cost grows with the padded length; batching similar lengths together makes a text
epoch several times cheaper on CPU while keeping the order random at the level of batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmemo.data.examples import Example


def text_length(example: Example) -> int:
    """Characters of the utterance and its dialogue context: a cheap proxy for its token count."""
    turns = (*example.context_before, *example.context_after)
    return len(example.text or "") + sum(len(t.text) + len(t.speaker or "") for t in turns)


def utterance_length(example: Example) -> int:
    """Characters of the utterance alone, without its context."""
    return len(example.text or "")


# train.bucket_by: what a length-bucketed batch's examples are alike in
BUCKET_LENGTHS = {"input": text_length, "utterance": utterance_length}


def bucketed_order(lengths: Sequence[int] | torch.Tensor, batch_size: int, generator: torch.Generator,
                   pool_batches: int = 50) -> list[int]:
    """A permutation in which each consecutive block of ``batch_size`` indices has similar lengths.

    Shuffle, sort within pools of ``pool_batches`` batches, cut into batches, shuffle the batches.
    The one short batch (when ``batch_size`` does not divide the data) comes last, so that a
    DataLoader that re-cuts the stream into ``batch_size`` blocks keeps every batch intact.
    """
    lengths = torch.as_tensor(lengths)
    perm = torch.randperm(len(lengths), generator=generator)
    pool = batch_size * pool_batches
    batches: list[torch.Tensor] = []
    for start in range(0, len(perm), pool):
        chunk = perm[start:start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    order = torch.randperm(len(full), generator=generator).tolist()
    return [i for b in [full[j] for j in order] + short for i in b.tolist()]
