"""Dialogue context: the neighbouring utterances of the same dialogue, in utterance order."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from mmemo.data.examples import Example, Turn


def attach_context(examples: list[Example], past: int, future: int = 0) -> list[Example]:
    """Copies of ``examples`` with ``context_before`` (up to ``past`` turns) and ``context_after``.

    Turns are ordered by ``utterance_id`` within a ``dialogue_id``; ids may have gaps (MELD's do), so
    neighbours are taken by rank, and a dialogue boundary is never crossed. Examples without a
    dialogue id get no context.
    """
    if past <= 0 and future <= 0:
        return examples
    dialogues: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.dialogue_id is not None:
            dialogues[ex.dialogue_id].append(i)
    before: dict[int, tuple[Turn, ...]] = {}
    after: dict[int, tuple[Turn, ...]] = {}
    for members in dialogues.values():
        order = sorted(members, key=lambda i: (examples[i].utterance_id is None, examples[i].utterance_id or 0, i))
        turns = [Turn(examples[i].speaker, examples[i].text or "") for i in order]
        for rank, i in enumerate(order):
            before[i] = tuple(turns[max(0, rank - past):rank]) if past > 0 else ()
            after[i] = tuple(turns[rank + 1:rank + 1 + future]) if future > 0 else ()
    return [
        dataclasses.replace(ex, context_before=before.get(i, ()), context_after=after.get(i, ()))
        for i, ex in enumerate(examples)
    ]
