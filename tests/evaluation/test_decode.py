"""promoe.evaluation.decode: shared-prefix greedy decoding of each model equals its own ``generate``, and with a task's
prompt start shared (promoe.evaluation.prompt_cache) decoding and reference likelihoods equal the whole prompts'."""

from __future__ import annotations

import copy
from dataclasses import replace
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
from promoe.model.build import build_model
from promoe.model.prompting import chat_prompt
from promoe.model.task_encoder import HashingEncoder
from tests.helpers import DECODE_CFG, _models


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


def _task_batch(tok) -> tuple[dict, list[str], list[str]]:
    """Four tasks with long Definitions: four instances of one (two of them identical), two of another, one with a
    short prompt and one with a long one (no shared start), in mixed order and lengths, left padded."""
    definitions = {"A": "Definition: copy the word list and sort it by length, longest first. " * 2,
                   "B": "Definition: answer with the last word of the sentence, lower cased. " * 2,
                   "C": "Definition: say yes.", "D": "Definition: translate the sentence into French, word by word. " * 3}
    rows = [("A", "apple pear fig"), ("B", "The cat sat"), ("A", "a much longer list of words to sort " * 4),
            ("C", "maybe"), ("A", "apple pear fig"), ("B", "Dogs bark loudly at night"), ("A", "kiwi"), ("D", "ok")]
    texts = [chat_prompt(tok, f"{definitions[t]}\n\nNow complete the following example -\nInput: {x}\nOutput:")
             for t, x in rows]
    tok.padding_side = "left"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False), [t for t, _ in rows], texts


def _task_model(backbone):
    """promoe with task-level routing (``proactive_mode="task"``): one routing per row, none per token; two MoE
    layers, so that the routing of a prompt's start reaches the answer (through the keys and values of the top one)."""
    cfg = replace(DECODE_CFG, proactive_mode="task", n_moe_layers=2)
    m = build_model(copy.deepcopy(backbone.model), backbone.family, cfg, "promoe", seed=2)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def test_a_task_s_shared_prompt_start_decodes_and_scores_as_the_whole_prompts(backbone) -> None:
    tok = backbone.tokenizer
    models = {**_models(backbone), "promoe-task": _task_model(backbone)}
    enc, groups, _ = _task_batch(tok)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert models["promoe-task"].split < models["dense"].split
    shared = prefill(models["dense"], ids, mask, room=12, groups=groups, pad_id=tok.pad_token_id)
    assert shared.shared is not None and shared.hidden.shape[1] < ids.shape[1]
    # C and D share nothing; C is shorter than the others' suffixes, D's start runs with the shared ones, alone
    assert shared.shared.group.tolist() == [0, 1, 0, -1, 0, 1, 0, 2]
    assert shared.mask.sum(1).tolist() == mask.sum(1).tolist()  # every prompt's tokens, in another layout
    assert [r[m.bool()].tolist() for r, m in zip(shared.input_ids, shared.mask, strict=True)] == \
        [r[m.bool()].tolist() for r, m in zip(ids, mask, strict=True)]
    emb = HashingEncoder(16).encode(groups)  # one description per task
    refs = [[[5, 6, 7, 8], [9, 10]], [[11, 12, 13]], [[14]], [[15, 16]], [[5, 6, 7, 8]], [[17, 18, 19, 20]], [[21]],
            [[22, 23]]]
    for kind, m in models.items():
        e = emb if kind.startswith("promoe") else None
        ref = m.generate(ids, attention_mask=mask, task_emb=e, task_keys=groups, max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_token_id,
                         stopping_criteria=StoppingCriteriaList([FirstLineDone(tok, ids.shape[1])]))[:, ids.shape[1]:]
        out, nll = [], []
        for p in (prefill(m, ids, mask, room=12), prefill(m, ids, mask, room=12, groups=groups, pad_id=tok.pad_token_id)):
            stop = FirstLineDone(tok, p.input_ids.shape[1])
            prompted, _ = m.with_routing(partial(upper, m, p, room=12), e, groups, record=False)
            targets = lower_targets(m, p, refs, pad_id=tok.pad_token_id)
            nll.append(best_target_nll(m, prompted, list(range(len(groups))), targets,
                                       routing=m.task_routing(e, groups)))
            new, _ = m.with_routing(partial(greedy, m, p, max_new_tokens=12, stopper=stop, pad_id=tok.pad_token_id,
                                            eos=eos_ids(m), prompted=prompted), e, groups, record=False)
            out.append(new)
        assert torch.equal(out[1], out[0]), kind
        torch.testing.assert_close(out[1], ref[:, :out[1].shape[1]], rtol=0, atol=0)
        assert nll[1] == pytest.approx(nll[0], rel=1e-5), kind


def test_rows_of_a_shared_start_must_be_routed_alike(backbone) -> None:
    tok = backbone.tokenizer
    m = _models(backbone)["promoe"]
    enc, groups, _ = _task_batch(tok)
    p = prefill(m, enc["input_ids"], enc["attention_mask"], groups=groups, pad_id=tok.pad_token_id)
    emb = HashingEncoder(16).encode([f"row {r}" for r in range(len(groups))])  # a description per row
    with pytest.raises(ValueError, match="routed differently"):
        m.with_routing(partial(upper, m, p), emb, [f"row {r}" for r in range(len(groups))], record=False)
