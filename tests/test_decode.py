"""promoe.decode: shared-prefix greedy decoding of each model equals its own ``generate``."""

from __future__ import annotations

from functools import partial

import torch
from transformers import StoppingCriteriaList

from promoe.decode import eos_ids, greedy, prefill, supports_shared_prefix
from promoe.evaluate import FirstLineDone
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import HashingEncoder
from tests.helpers import _models


def test_prefill_greedy_equals_generate(backbone) -> None:
    tok = backbone.tokenizer
    models = _models(backbone)
    assert all(supports_shared_prefix(m) for m in models.values())
    texts = [chat_prompt(tok, "short"), chat_prompt(tok, "a much longer prompt " * 3), chat_prompt(tok, "mid size")]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    emb = HashingEncoder(16).encode(["d0", "d1", "d2"])
    keys = ["k0", "k1", "k2"]
    prefix = prefill(models["dense"], enc["input_ids"], enc["attention_mask"])
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
