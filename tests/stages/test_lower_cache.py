"""promoe.stages.lower_cache: the frozen lower part's hidden states, cached per example."""

from __future__ import annotations

import pytest
import torch

from promoe.stages.lower_cache import LowerCache
from tests.model.helpers import VOCAB, D, build, tiny_llama

pytestmark = pytest.mark.usefixtures("tiny_tensors")


def test_lower_cache_does_not_depend_on_the_batch_that_fills_it() -> None:
    """An example's cached hidden states are those of the example alone, whichever (right-padded)
    batch first needed it: a resumed run caches bit-identical values to an uninterrupted one."""
    model = build(tiny_llama(), "llama", "moe")
    lengths = [3, 9, 5, 12, 7, 2]
    ids = torch.randint(1, VOCAB, (len(lengths), max(lengths)))
    mask = torch.tensor([[1] * n + [0] * (max(lengths) - n) for n in lengths])

    def fill(order: list[list[int]]) -> LowerCache:
        cache = LowerCache()
        for rows in order:
            out = cache(model, rows, ids[rows], mask[rows])
            assert out.shape == (len(rows), max(lengths), D)
            for r, i in enumerate(rows):  # padding positions stay zero
                assert not out[r, lengths[i]:].any()
        return cache

    a, b = fill([[0, 1, 2], [3, 4, 5]]), fill([[5], [3, 1], [0, 4], [2, 1, 3]])
    assert sorted(a.store) == sorted(b.store) == list(range(len(lengths)))
    for i, n in enumerate(lengths):
        alone = model.lower_hidden(ids[i:i + 1, :n], mask[i:i + 1, :n])[0]
        assert torch.equal(a.store[i], b.store[i]) and torch.equal(a.store[i], alone)
    b.store[0] += 1  # filled entries are reused, not recomputed
    assert torch.equal(b(model, [0], ids[:1], mask[:1])[0, :lengths[0]], a.store[0] + 1)


def test_keep_drops_the_other_training_examples_and_no_validation_example() -> None:
    model = build(tiny_llama(), "llama", "moe")
    ids, mask = torch.randint(1, VOCAB, (1, 4)), torch.ones(1, 4, dtype=torch.long)
    cache = LowerCache()
    for key in (0, 1, 2, -1, -2):
        cache(model, [key], ids, mask)
    cache.keep({1, 7})
    assert sorted(cache.store) == [-2, -1, 1]
    cache.keep(set())
    assert sorted(cache.store) == [-2, -1]
