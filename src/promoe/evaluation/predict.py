"""Zero-shot evaluation: batched greedy generation on unseen tasks, official-format outputs, scores.

Instances are sorted by prompt length and generated in batches (little padding); the proactive
routing of each task is generated once and reused for all its instances; decoding stops for a row
once it has written a non-empty first line (the answer kept), and for all rows at ``max_new_tokens``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from promoe.config import PromptConfig
from promoe.data.collate import encode_target
from promoe.data.prompts import fits_in, fitted_prompt
from promoe.data.schema import Instance, Task
from promoe.evaluation.decode import (
    best_target_nll,
    eos_ids,
    greedy,
    lower_targets,
    prefill,
    supports_shared_prefix,
    upper,
)
from promoe.evaluation.prompt_cache import positions, task_keys
from promoe.evaluation.state import PassState, fingerprint
from promoe.io import reference_rows, references_of, write_json, write_jsonl
from promoe.metrics import add_likelihood, score
from promoe.model.moe_model import MoEModel, TaskRouting
from promoe.model.prompting import answer_done, first_line
from promoe.model.stats import RoutingStats

log = logging.getLogger(__name__)


class FirstLineDone(StoppingCriteria):
    """Per row: stop once the generated text holds a finished answer line (:func:`answer_done`: a line with
    content, an echoed ``Output:`` label aside, followed by a newline)."""

    def __init__(self, tokenizer, prompt_len: int) -> None:
        self.tokenizer, self.prompt_len = tokenizer, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:].cpu()
        if new.shape[1] == 0:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([answer_done(t) for t in texts], dtype=torch.bool, device=input_ids.device)


def eval_items(tasks: Sequence[Task], origins: Sequence[str] = ("instance", "positive_example")):
    return [(t, i) for t in tasks for i in t.instances if i.origin in origins]


@dataclass
class Variant:
    """One row of an evaluation: a model and the task descriptions its router sees.

    ``task_emb`` maps a task name to the embedding fed to the router (the task's own Definition, or
    an ablation's replacement); ``tasks`` limits the variant to some tasks and ``ids`` to some instances
    (None: all).
    """

    name: str
    model: MoEModel
    task_emb: dict[str, torch.Tensor] | None = None
    stats: RoutingStats | None = None
    tasks: set[str] | None = None
    ids: set[str] | None = None

    def covers(self, task: str, instance_id: str) -> bool:
        """Whether this row scores the instance ``instance_id`` of ``task``."""
        return (self.tasks is None or task in self.tasks) and (self.ids is None or instance_id in self.ids)


def batches_of(order: Sequence[int], lengths: Sequence[int], batch_size: int,
               batch_tokens: int | None = None) -> list[list[int]]:
    """``order`` (prompts sorted by length) cut into consecutive batches of at most ``batch_size`` prompts and, with
    ``batch_tokens``, at most that many padded prompt tokens (size x longest ``lengths``), one prompt at least."""
    out: list[list[int]] = []
    for j in order:
        batch = out[-1] if out else []
        longest = max([lengths[j], *(lengths[i] for i in batch)])
        if not batch or len(batch) == batch_size or (batch_tokens is not None and (len(batch) + 1) * longest > batch_tokens):
            out.append([j])
        else:
            batch.append(j)
    return out


@torch.no_grad()
def predict_variants(variants: Sequence[Variant], tokenizer, items: Sequence[tuple[Task, Instance]], *,
                     prompt: PromptConfig, wrap: Callable[[str], str], batch_size: int = 8,
                     max_new_tokens: int = 32, max_length: int = 1024, batch_tokens: int | None = None,
                     desc: str = "eval",
                     disable_progress: bool = False, progress: Path | None = None,
                     counts: dict[str, int] | None = None, likelihood: dict[str, dict[str, float]] | None = None,
                     max_target_length: int = 64, prefix_cache: bool = True) -> dict[str, dict[str, str]]:
    """Greedy answers ``{variant: {instance id: first non-empty line}}`` for ``items``.

    All variants see the same prompts. When their backbone allows it (see
    :func:`~promoe.evaluation.decode.supports_shared_prefix`; the variants must share the frozen lower layers),
    each batch's pass through the lower layers is computed once for all variants. With ``progress``
    (a JSON file), the answers and routing counts are saved after every batch and a killed pass
    resumes at its first unsaved batch (see :mod:`promoe.evaluation.state`). ``counts``, if given, receives
    the number of ``prompts`` and how many lost (the start of) their Definition to fit ``max_length`` (``cut``;
    prompts are made to fit by :func:`promoe.data.prompts.fit_prompt`, as in training). With ``likelihood`` (filled
    ``{row: {instance id: NLL}}``; the shared-prefix path only), each row's reference NLL is scored in the
    same pass, from its prompt's cache (:func:`promoe.evaluation.decode.best_target_nll`; a reference keeps its first
    ``max_target_length`` tokens with EOS, as in training). Batches: :func:`batches_of`. With ``prefix_cache`` (the
    shared-prefix path only), the instances of a task in a batch share their prompts' common start: the lower layers
    and each variant's upper layers run it once (:mod:`promoe.evaluation.prompt_cache`); a task's instances then go in
    consecutive batches where that computes fewer positions (:func:`cache_order`).
    """
    for v in variants:
        v.model.eval()
    fits = fits_in(tokenizer, wrap, max_length)  # demonstrations and the input's end are cut before the Definition
    fitted = [fitted_prompt(t, i, prompt, fits) for t, i in items]
    prompts = [wrap(f.text) for f in fitted]
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    tokens = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in tokens]
    # rows limited to some instances (eval.headline_rows' others) get batches of their own instances: first the
    # instances every such row scores, then the rest, each by length (no batch mostly of prompts they skip);
    # instances no row scores are not run
    limited = [v for v in variants if v.ids is not None]
    scored = [j for j, (t, i) in enumerate(items) if any(v.covers(t.name, i.id) for v in variants)]
    shared = all(supports_shared_prefix(v.model) for v in variants)
    prefix_cache = prefix_cache and shared
    part = {j: any(items[j][1].id not in v.ids for v in limited) for j in scored}
    order = sorted(scored, key=lambda j: (part[j], lengths[j]))
    if prefix_cache:  # or each task's prompts together, where that computes fewer positions (many per task)
        order = cache_order(order, part, [t.name for t, _ in items], [x[-max_length:] for x in tokens], batch_size,
                            batch_tokens)
    cut = sum(fitted[j].cut == "definition" for j in scored)  # the start of the Definition lost (fit_prompt)
    if counts is not None:
        counts.update(prompts=len(scored), cut=cut)
    if inputs := sum(fitted[j].cut == "input" for j in scored):
        log.info("%s: %d of %d prompts kept their Definition within %d tokens by losing the end of their input",
                 desc, inputs, len(scored), max_length)
    if over := sum(lengths[j] > max_length for j in scored):
        log.warning("%s: %d of %d prompts are longer than %d tokens and lose their start (eval.max_length); "
                    "the longest has %d", desc, over, len(scored), max_length, max(lengths[j] for j in scored))
    elif cut:
        log.warning("%s: %d of %d prompts kept only the end of their Definition within %d tokens (eval.max_length)",
                    desc, cut, len(scored), max_length)
    if likelihood is not None and not shared:
        raise ValueError("predict_variants: likelihood is scored in the shared-prefix pass only "
                         "(promoe.evaluation.likelihood.reference_nll scores the others)")
    targets = None if likelihood is None else reference_tokens(tokenizer, items, max_target_length)
    out: dict[str, dict[str, str]] = {v.name: {} for v in variants}
    batches = batches_of(order, [min(n, max_length) for n in lengths], batch_size, batch_tokens)
    state = PassState(progress, fingerprint(prompts, [items[j][1].id for j in order], batch_size, max_new_tokens,
                                            max_length, None if likelihood is None else max_target_length,
                                            *([batch_tokens] if batch_tokens is not None else [])), label=desc)
    done = state.resume(variants, out, likelihood)
    routing_of = {v.name: TaskRouting(v.model, v.task_emb) for v in variants}  # each row's own, per task once
    device = next(variants[0].model.parameters()).device
    for b in tqdm(range(min(done.values()), len(batches)), desc=desc, dynamic_ncols=True, disable=disable_progress,
                  initial=min(done.values()), total=len(batches)):
        todo = [v for v in variants if done[v.name] <= b]
        idx = batches[b]
        enc = tokenizer([prompts[j] for j in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        # the cache keeps room for the longest continuation a variant writes after the prompt: its answer or a reference
        room = max([max_new_tokens, *(len(r) for j in idx for r in (targets[j] if targets is not None else ()))])
        groups = [items[j][0].name for j in idx] if prefix_cache else None  # each task's common start, once
        prefix = prefill(variants[0].model, enc["input_ids"], enc["attention_mask"], room=room, groups=groups,
                         pad_id=tokenizer.pad_token_id) if shared else None
        stopper = FirstLineDone(tokenizer, (prefix.input_ids if shared else enc["input_ids"]).shape[1])
        batch_targets = None if targets is None else lower_targets(  # every row's references, lower layers once
            variants[0].model, prefix, [targets[j] for j in idx], pad_id=tokenizer.pad_token_id)
        for v in todo:
            rows = [r for r, j in enumerate(idx) if v.covers(items[j][0].name, items[j][1].id)]
            if not rows:
                continue
            keys = [items[idx[r]][0].name for r in rows]
            task_routing = routing_of[v.name].rows(keys, device)
            sel = torch.tensor(rows, device=device)
            ids, mask = enc["input_ids"][sel], enc["attention_mask"][sel]
            if shared:
                part = prefix if len(rows) == len(idx) else prefix.select(sel)
                mask = part.mask  # the prompts' layout: with a shared start, [its block | the row's own]
                record = v.stats is not None
                prompted, routing = v.model.with_routing(partial(upper, v.model, part, room=room), None,
                                                         None, record=record, routing=task_routing)
                if targets is not None:  # before decoding, which appends to the prompt's cache
                    draws = v.model.draws()  # a random router decodes with the draws it would have had
                    nll = best_target_nll(v.model, prompted, rows, batch_targets, routing=task_routing)
                    v.model.set_rng_states(draws)
                    likelihood[v.name].update((items[idx[r]][1].id, x) for r, x in zip(rows, nll, strict=True)
                                              if x != float("inf"))  # an instance without references has none
                new, more = v.model.with_routing(
                    partial(greedy, v.model, part, max_new_tokens=max_new_tokens, stopper=stopper,
                            pad_id=tokenizer.pad_token_id, eos=eos_ids(v.model), prompted=prompted),
                    None, None, record=record, routing=task_routing)
                routing = routing + more
                for info in routing:
                    if info.router.probs.shape[:2] == mask.shape:
                        info.mask = mask
            else:
                gen, routing = v.model.generate(ids, attention_mask=mask, routing=task_routing, return_routing=True,
                                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                                stopping_criteria=StoppingCriteriaList([stopper]))
                new = gen[:, ids.shape[1]:]
            if v.stats is not None:
                v.stats.update(routing, keys)
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for r, text in zip(rows, texts, strict=True):
                out[v.name][items[idx[r]][1].id] = first_line(text)
        state.save(todo, out, b + 1, likelihood)
    return out


def cache_order(order: list[int], part: dict[int, bool], tasks: Sequence[str], ids: Sequence[Sequence[int]],
                batch_size: int, batch_tokens: int | None) -> list[int]:
    """``order`` (prompts by ``part``, then by length), or the prompts by ``part``, then each task's together
    (:func:`promoe.evaluation.prompt_cache.task_keys`), then by length: whichever computes fewer prompt positions with the
    prompt cache (:func:`promoe.evaluation.prompt_cache.positions`; ties: ``order``). Together pays with several instances of
    a task per batch; with one or two, the padding between tasks costs more than their shared starts save."""
    keys = task_keys([tasks[j] for j in order], [ids[j] for j in order])
    together = sorted(order, key=lambda j: (part[j], keys[tasks[j]], len(ids[j])))

    def cost(o: list[int]) -> int:
        return sum(positions([ids[j] for j in b], [tasks[j] for j in b])
                   for b in batches_of(o, [len(x) for x in ids], batch_size, batch_tokens))

    return together if cost(together) < cost(order) else order


def reference_tokens(tokenizer, items: Sequence[tuple[Task, Instance]], max_target_length: int) -> list[list[list[int]]]:
    """Per item, each reference's token ids as training encodes a target (:func:`promoe.data.collate.encode_target`)."""
    return [[encode_target(tokenizer, ref, max_target_length=max_target_length) for ref in i.outputs]
            for _, i in items]


def predict(model: MoEModel, tokenizer, items: Sequence[tuple[Task, Instance]], *,
            task_emb: dict[str, torch.Tensor] | None, stats: RoutingStats | None = None, **kw) -> dict[str, str]:
    """Greedy answers ``{instance id: first non-empty line}`` of one model (see :func:`predict_variants`)."""
    return predict_variants([Variant("model", model, task_emb, stats)], tokenizer, items, **kw)["model"]


def write_predictions(out_dir: Path, name: str, items: Sequence[tuple[Task, Instance]], preds: dict[str, str],
                      tasks: Sequence[Task], all_items: Sequence[tuple[Task, Instance]] | None = None,
                      nll: dict[str, float] | None = None) -> dict:
    """Write ``predictions/<name>.jsonl`` and ``scores/<name>.json``, and once the references of
    ``all_items`` (every scored instance of the run; default ``items``). With ``nll`` (instance id ->
    reference NLL, :mod:`promoe.evaluation.likelihood`), first ``likelihood/<name>.jsonl``, and the scores hold it."""
    ids = {i.id for _, i in items}
    every = references_of(tasks)
    refs = [r for r in every if r.id in ids]
    ref_path = out_dir / "references.jsonl"
    if not ref_path.exists():
        all_ids = {i.id for _, i in (all_items or items)}
        write_jsonl(ref_path, reference_rows([r for r in every if r.id in all_ids]))
    write_jsonl(out_dir / "predictions" / f"{name}.jsonl", ({"id": i.id, "prediction": preds.get(i.id, "")}
                                                           for _, i in items))
    result = score(preds, refs)
    if nll is not None:
        write_jsonl(out_dir / "likelihood" / f"{name}.jsonl", ({"id": i.id, "ref_nll": nll[i.id]} for _, i in items))
        result = add_likelihood(result, nll, refs)
    write_json(out_dir / "scores" / f"{name}.json", result)
    return result
