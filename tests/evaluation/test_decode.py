"""promoe.evaluation.decode: shared-prefix greedy decoding of each model equals its own ``generate``."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from transformers import StoppingCriteriaList

from promoe.evaluation.decode import (
    best_target_nll,
    eos_ids,
    greedy,
    lower_targets,
    prefill,
    supports_shared_prefix,
    upper,
)
from promoe.evaluation.predict import FirstLineDone
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import HashingEncoder
from tests.helpers import _models


@pytest.mark.parametrize("room", [0, 12])
def test_prefill_greedy_equals_generate(backbone, room: int) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    assert all(supports_shared_prefix(m) for m in models.values())
    texts = [chat_prompt(tok, "short"), chat_prompt(tok, "a much longer prompt " * 3), chat_prompt(tok, "mid size")]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    emb = HashingEncoder(16).encode(["d0", "d1", "d2"])
    keys = ["k0", "k1", "k2"]
    prefix = prefill(models["dense"], enc["input_ids"], enc["attention_mask"], room=room)
    kept = {i: (k.clone(), v.clone()) for i, (k, v) in prefix.kv.items()}
    for kind, m in models.items():
        e = emb if kind == "promoe" else None
        stop = FirstLineDone(tok, enc["input_ids"].shape[1])
        ref = m.generate(enc["input_ids"], attention_mask=enc["attention_mask"], task_emb=e, task_keys=keys,
                         max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                         stopping_criteria=StoppingCriteriaList([stop]))[:, enc["input_ids"].shape[1]:]
        new, _ = m.with_routing(partial(greedy, m, prefix, max_new_tokens=12, stopper=stop, pad_id=tok.pad_token_id,
                                        eos=eos_ids(m)), e, keys, record=False)
        assert new.shape[1] > 0
        torch.testing.assert_close(new, ref[:, :new.shape[1]], rtol=0, atol=0)
        assert (ref[:, new.shape[1]:] == tok.pad_token_id).all()  # generate only padded after every row stopped
    for i, (k, v) in prefix.kv.items():  # every variant decoded after the prefix's positions, none changed them
        assert torch.equal(k, kept[i][0]) and torch.equal(v, kept[i][1])


def test_variants_decode_in_the_prefix_s_room_without_copying_it(backbone) -> None:
    tok = backbone.tokenizer
    m = _models(backbone)["moe"]
    tok.padding_side = "left"
    enc = tok([chat_prompt(tok, "one"), chat_prompt(tok, "two words")], return_tensors="pt", padding=True,
              add_special_tokens=False)
    prefix = prefill(m, enc["input_ids"], enc["attention_mask"], room=8)
    prompted = upper(m, prefix, room=8)
    lower_k = prefix.kv.buf[0][0]
    assert prompted.kv.buf[0][0] is lower_k  # the lower layers' cache is the prefix's, not a copy
    greedy(m, prefix, max_new_tokens=8, stopper=lambda seq, _: torch.zeros(len(seq), dtype=torch.bool),
           pad_id=tok.pad_token_id, prompted=prompted)
    assert prompted.kv.buf[0][0] is lower_k and prompted.kv.len[0] > prefix.kv.len[0]  # decoded into the room
    assert prefix.kv.len[0] == enc["input_ids"].shape[1]


def test_reference_nll_is_the_same_with_room_in_the_cache_or_grown(backbone) -> None:
    """References longer than the room make the cache grow into buffers of its own; rows without a second
    reference take a copy of the others' rows: either way the same likelihoods, and the prompt's cache unchanged."""
    tok = backbone.tokenizer
    m = _models(backbone)["moe"]
    tok.padding_side = "left"
    enc = tok([chat_prompt(tok, "first prompt"), chat_prompt(tok, "the second, longer prompt")], return_tensors="pt",
              padding=True, add_special_tokens=False)
    refs = [[[5, 6, 7, 8, 9, 10], [11, 12]], [[13, 14, 15]]]  # row 0 has two references, row 1 one
    out = []
    for room in (0, 2, 8):
        prefix = prefill(m, enc["input_ids"], enc["attention_mask"], room=room)
        kept = {i: k.clone() for i, (k, _) in prefix.kv.items()}
        targets = lower_targets(m, prefix, refs, pad_id=tok.pad_token_id)
        prompted = upper(m, prefix, room=room)
        out.append(best_target_nll(m, prompted, [0, 1], targets, routing=None))
        assert all(torch.equal(k, kept[i]) for i, (k, _) in prefix.kv.items())
    assert out[0] == pytest.approx(out[2], rel=1e-5) and out[1] == pytest.approx(out[2], rel=1e-5)
    assert all(x > 0 for x in out[2])
