"""Zero-shot evaluation: batched greedy generation on unseen tasks, official-format outputs, scores.

Instances are sorted by prompt length and generated in batches (little padding); the proactive
routing of each task is generated once and reused for all its instances; decoding stops for a row
once it has written a non-empty first line (the answer kept), and for all rows at ``max_new_tokens``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from promoe.config import PromptConfig
from promoe.data.prompts import task_prompt
from promoe.data.schema import Instance, Task
from promoe.io import reference_rows, references_of, write_json, write_jsonl
from promoe.metrics import score
from promoe.model.moe_model import MoEModel
from promoe.model.prompting import first_line
from promoe.model.stats import RoutingStats

log = logging.getLogger(__name__)


class FirstLineDone(StoppingCriteria):
    """Per row: stop once a newline follows some non-whitespace generated text."""

    def __init__(self, tokenizer, prompt_len: int) -> None:
        vocab = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(vocab)])
        self.newline = torch.tensor(["\n" in t for t in texts])
        self.content = torch.tensor([bool(t.strip()) for t in texts])
        self.content_before_newline = torch.tensor([bool(t.split("\n")[0].strip()) for t in texts])
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:].cpu().clamp(max=len(self.newline) - 1)
        if new.shape[1] == 0:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)
        nl = self.newline[new]
        has_text = torch.cumsum(self.content[new].int(), dim=1) > 0
        # a newline token ends the answer if text came before it (or in the same token, before the \n)
        prior_text = torch.cat([torch.zeros_like(has_text[:, :1]), has_text[:, :-1]], dim=1)
        ends = nl & (prior_text | self.content_before_newline[new])
        return ends.any(dim=1).to(input_ids.device)


def eval_items(tasks: Sequence[Task], origins: Sequence[str] = ("instance", "positive_example")):
    return [(t, i) for t in tasks for i in t.instances if i.origin in origins]


@torch.no_grad()
def predict(model: MoEModel, tokenizer, items: Sequence[tuple[Task, Instance]], *, task_emb: dict[str, torch.Tensor],
            prompt: PromptConfig, wrap: Callable[[str], str], batch_size: int = 8, max_new_tokens: int = 32,
            max_length: int = 1024, stats: RoutingStats | None = None, desc: str = "eval",
            disable_progress: bool = False) -> dict[str, str]:
    """Greedy answers ``{instance id: first non-empty line}`` for ``items``."""
    model.eval()
    prompts = [wrap(task_prompt(t, i, n_pos_examples=prompt.n_pos_examples, add_explanation=prompt.add_explanation))
               for t, i in items]
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(items)), key=lambda j: lengths[j])
    stopper = None
    out: dict[str, str] = {}
    device = next(model.parameters()).device
    for s in tqdm(range(0, len(order), batch_size), desc=desc, dynamic_ncols=True, disable=disable_progress):
        idx = order[s:s + batch_size]
        enc = tokenizer([prompts[j] for j in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, add_special_tokens=False)
        keys = [items[j][0].name for j in idx]
        emb = torch.stack([task_emb[k] for k in keys]).to(device) if task_emb else None
        enc = {k: v.to(device) for k, v in enc.items()}
        if stopper is None or stopper.prompt_len != enc["input_ids"].shape[1]:
            stopper = _stopper(tokenizer, enc["input_ids"].shape[1], stopper)
        gen, routing = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], task_emb=emb,
                                      task_keys=keys, return_routing=True, max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                      stopping_criteria=StoppingCriteriaList([stopper]))
        if stats is not None:
            stats.update(routing, keys)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, text in zip(idx, texts, strict=True):
            out[items[j][1].id] = first_line(text)
    return out


def _stopper(tokenizer, prompt_len: int, previous: FirstLineDone | None) -> FirstLineDone:
    if previous is None:
        return FirstLineDone(tokenizer, prompt_len)
    previous.prompt_len = prompt_len  # the token tables do not change
    return previous


def write_predictions(out_dir: Path, name: str, items: Sequence[tuple[Task, Instance]], preds: dict[str, str],
                      tasks: Sequence[Task]) -> dict:
    """Write ``predictions/<name>.jsonl`` and ``scores/<name>.json``; the references of ``items`` once."""
    ids = {i.id for _, i in items}
    refs = [r for r in references_of(tasks) if r.id in ids]
    ref_path = out_dir / "references.jsonl"
    if not ref_path.exists():
        write_jsonl(ref_path, reference_rows(refs))
    write_jsonl(out_dir / "predictions" / f"{name}.jsonl", ({"id": i.id, "prediction": preds.get(i.id, "")}
                                                           for _, i in items))
    result = score(preds, refs)
    write_json(out_dir / "scores" / f"{name}.json", result)
    return result
