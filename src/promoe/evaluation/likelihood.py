"""Reference likelihood of evaluation rows: per scored instance, the mean per-token NLL of its references
given the prompt (teacher forcing, forward passes only; the lowest over an instance's references, as
ROUGE-L takes the best). A low-noise second metric next to ROUGE-L / exact match, and the natural way to
compare routings over the same frozen experts.

Rows that share the frozen lower layers of a decoder-only backbone get it in their generation pass instead
(:func:`promoe.evaluation.predict.predict_variants` with ``likelihood``: each reference through the prompt's cache, the
prompt not run twice); this pass scores the others (encoder-decoder backbones, few-shot rows).

Each row sees the same prompts as its generation pass (:func:`promoe.data.prompts.config_prompt`) and the
routing of its own :class:`~promoe.model.moe_model.TaskRouting`; when the rows share their frozen lower
layers (:func:`promoe.evaluation.decode.supports_shared_prefix`) a batch's pass through them is computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from promoe.config import PromptConfig
from promoe.data.collate import encode_pair, pad_batch
from promoe.data.prompts import config_prompt, fits_in
from promoe.data.schema import Instance, Task
from promoe.evaluation.decode import supports_shared_prefix
from promoe.evaluation.predict import Variant
from promoe.model.moe_model import TaskRouting


@torch.no_grad()
def reference_nll(variants: Sequence[Variant], tokenizer, items: Sequence[tuple[Task, Instance]], *,
                  prompt: PromptConfig, wrap: Callable[[str], str], batch_size: int = 8, max_length: int = 1024,
                  max_target_length: int = 64, desc: str = "likelihood",
                  disable_progress: bool = False) -> dict[str, dict[str, float]]:
    """``{row: {instance id: mean per-token NLL of its best reference}}`` for ``items`` (module docstring).

    The prompt keeps its end when prompt + reference exceed ``max_length`` (as in training); a reference
    is cut to ``max_target_length`` tokens.
    """
    model0 = variants[0].model
    seq2seq = model0.is_seq2seq
    pairs = []  # (item index, encoded prompt + reference)
    fits = fits_in(tokenizer, wrap, max_length)  # the prompts of the generation pass (evaluate.predict_variants)
    for j, (t, inst) in enumerate(items):
        text = wrap(config_prompt(t, inst, prompt, fits))
        pairs += [(j, encode_pair(tokenizer, text, ref, max_length=max_length, seq2seq=seq2seq,
                                  max_target_length=max_target_length)) for ref in inst.outputs]
    order = sorted(range(len(pairs)), key=lambda k: len(pairs[k][1].input_ids))
    shared = all(supports_shared_prefix(v.model) for v in variants)
    routing_of = {v.name: TaskRouting(v.model, v.task_emb) for v in variants}
    best: dict[str, dict[str, float]] = {v.name: {} for v in variants}
    device = next(model0.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, dynamic_ncols=True, disable=disable_progress):
        idx = order[start:start + batch_size]
        keys = [items[pairs[k][0]][0].name for k in idx]
        b = pad_batch([pairs[k][1] for k in idx], keys, pad_id=tokenizer.pad_token_id, left=False, seq2seq=seq2seq)
        ids, mask, labels = b.input_ids.to(device), b.attention_mask.to(device), b.labels.to(device)
        lower = model0.lower_hidden(ids, mask) if shared and model0.split is not None else None
        n_tokens = (labels != -100).sum(1) if seq2seq else (labels[:, 1:] != -100).sum(1)
        for v in variants:
            sel = [r for r, k in enumerate(idx) if v.covers(keys[r], items[pairs[k][0]][1].id)]
            if not sel:
                continue
            s = torch.tensor(sel, device=device)
            out = v.model(input_ids=None if lower is not None else ids[s], attention_mask=mask[s], labels=labels[s],
                          lower=None if lower is None else lower[s], per_example=True,
                          routing=routing_of[v.name].rows([keys[r] for r in sel], device))
            for r, nll in zip(sel, (out.lm_loss / n_tokens[s].clamp_min(1)).tolist(), strict=True):
                inst_id = items[pairs[idx[r]][0]][1].id
                best[v.name][inst_id] = min(nll, best[v.name].get(inst_id, float("inf")))
    return best


__all__ = ["reference_nll"]
