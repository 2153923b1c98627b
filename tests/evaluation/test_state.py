"""promoe.evaluation.state: an evaluation pass killed after a progress save resumes at its first unsaved batch
and ends with exactly the answers and routing counts of an uninterrupted pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promoe.config import PromptConfig
from promoe.evaluation import predict as evaluate
from promoe.evaluation.decode import prefill
from promoe.evaluation.predict import Variant, predict_variants
from promoe.evaluation.state import PassState
from promoe.model.build import replace_routers, variant_copy
from promoe.model.prompting import chat_prompt
from promoe.model.stats import RoutingStats
from promoe.model.task_encoder import HashingEncoder
from tests.helpers import _models, _tasks


class Killed(Exception):
    """Stands for a SIGKILL right after a progress save."""


def _die_after(monkeypatch, units: int) -> None:
    save = PassState.save

    def save_then_die(self, rows, out, done, likelihood=None):
        save(self, rows, out, done, likelihood)
        if done == units:
            raise Killed

    monkeypatch.setattr(PassState, "save", save_then_die)


def test_killed_pass_resumes_at_its_first_unsaved_batch(backbone, tmp_path, monkeypatch, caplog) -> None:
    """A pass killed after 2 of its 5 batches, run again, runs the 3 others only and ends with the answers and
    routing counts of an uninterrupted pass, exactly."""
    tok = backbone.tokenizer
    models = _models(backbone)
    tasks = _tasks()
    items = [(t, i) for t in tasks for i in t.instances]
    emb = dict(zip([t.name for t in tasks], HashingEncoder(16).encode([t.definition for t in tasks]), strict=True))
    kw = dict(prompt=PromptConfig(), wrap=lambda s: chat_prompt(tok, s), batch_size=2, max_new_tokens=6)

    def rows() -> list[Variant]:
        for m in models.values():
            m.clear_routing_cache()  # as in a new process
        for layer in random.moe_layers:
            layer.router.reset()
        return [Variant("dense", models["dense"]), Variant("moe", models["moe"], stats=RoutingStats(1, 4)),
                Variant("promoe", models["promoe"], emb, stats=RoutingStats(1, 4)),
                Variant("promoe-sub", models["promoe"], emb, stats=RoutingStats(1, 4), tasks={"task1"}),
                Variant("random", random, stats=RoutingStats(1, 4))]  # draws a sequence: saved and restored

    random = variant_copy(models["moe"])
    replace_routers(random, "random", seed=0)

    reference = rows()
    expected = predict_variants(reference, tok, items, **kw)
    path = tmp_path / "progress" / "eval.json"
    _die_after(monkeypatch, 2)
    with pytest.raises(Killed):
        predict_variants(rows(), tok, items, progress=path, **kw)
    monkeypatch.undo()
    assert {r["done"] for r in json.loads(path.read_text())["rows"].values()} == {2}
    passes = []  # batches through the lower layers (in one pass, or two with a task's shared start)
    monkeypatch.setattr(evaluate, "prefill", lambda *a, **k: passes.append(1) or prefill(*a, **k))
    resumed = rows()
    with caplog.at_level("INFO"):
        got = predict_variants(resumed, tok, items, progress=path, **kw)
    assert "resumed at 2 batches done" in caplog.text
    assert len(passes) == 3 and got == expected
    for a, b in zip(reference, resumed, strict=True):
        if a.stats is None:
            continue
        sa, sb = a.stats.state(), b.stats.state()
        for key in ("load", "prob_sum", "entropy_sum", "tokens"):
            assert np.array_equal(sa[key], sb[key]), (a.name, key)
        assert sa["task_load"].keys() == sb["task_load"].keys()
        assert all(np.array_equal(sa["task_load"][k], sb["task_load"][k]) for k in sa["task_load"]), a.name
    # a row the file holds in full is not run again; another pass's file is not used
    passes.clear()
    subset = predict_variants(rows()[1:2], tok, items, progress=path, **kw)
    assert subset["moe"] == expected["moe"] and not passes
    with caplog.at_level("WARNING"):
        other = predict_variants(rows(), tok, items, progress=path, **{**kw, "batch_size": 3})
    assert "belongs to another pass" in caplog.text
    # reference NLLs scored in the pass are saved with the answers and restored on resume
    def nll_of(variants: list[Variant]) -> dict[str, dict[str, float]]:
        return {v.name: {} for v in variants}

    shared = rows
    whole = nll_of(shared())
    assert predict_variants(shared(), tok, items, **kw, likelihood=whole) == expected  # random's draws unchanged
    path = tmp_path / "progress" / "nll.json"
    _die_after(monkeypatch, 2)
    with pytest.raises(Killed):
        predict_variants(shared(), tok, items, progress=path, **kw, likelihood=nll_of(shared()))
    monkeypatch.undo()
    again = nll_of(shared())
    predict_variants(shared(), tok, items, progress=path, **kw, likelihood=again)
    assert again == whole and all(again.values())
    assert other == predict_variants(rows(), tok, items, **{**kw, "batch_size": 3})
