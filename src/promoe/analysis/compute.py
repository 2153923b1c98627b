"""What each row's training cost, next to its score: ``train/<model>/compute.json`` of every trained model
(:func:`promoe.stages.compute.compute_record`), read and checked, and REPORT.md's "Compute per row".

A row built over a trained model inherits its compute (:func:`trained_of`): the routers over ``moe``'s
experts, ``promoe``'s ablations, a condition's rows their base model's (or, for a condition that trains
again, that training's: ``uniform-router_only`` stands on ``moe-router_only``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from promoe.errors import DataError
from promoe.limits import READ_ERRORS, LimitError, load_json, read_text
from promoe.registry import ABLATED, ROWS, entry, split_row

COMPUTE_FILE = "compute.json"
FIX = "write it as promoe.stages.compute.compute_record returns it, or delete it (train the model again to remake it)"


def _count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _rate(x: object) -> bool:
    return x is None or isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _check(d: object, path: Path) -> dict:
    def bad(field: str, problem: str) -> DataError:
        return DataError(problem, file=str(path), field=field, fix=FIX)

    if not isinstance(d, dict):
        raise bad("", "is not a JSON object")
    for key in ("steps", "examples", "examples_total", "batch_size"):
        if not _count(d.get(key)):
            raise bad(key, f"must be a non-negative integer, got {d.get(key)!r}")
    spec = d.get("specialisation")
    if spec is not None and not (isinstance(spec, dict) and _count(spec.get("steps")) and _count(spec.get("examples"))
                                 and _rate(spec.get("lr"))):
        raise bad("specialisation", f"must be null or {{steps, examples, lr}}, got {spec!r}")
    if d["examples_total"] != d["examples"] + (spec["examples"] if spec else 0):
        raise bad("examples_total", f"is {d['examples_total']}, not examples + the specialisation's examples")
    for key in ("lr", "router_lr"):
        if not _rate(d.get(key)):
            raise bad(key, f"must be null or a learning rate > 0, got {d.get(key)!r}")
    choice = d.get("lr_choice")
    if choice is not None and not (
            isinstance(choice, dict) and choice.get("key") in ("lr", "router_lr") and _count(choice.get("pilot_steps"))
            and isinstance(losses := choice.get("val_loss"), dict) and losses
            and all(v is None or _rate(v) or v == 0 for v in losses.values()) and _rate(choice.get("chosen"))):
        raise bad("lr_choice", "must be null or {key: lr | router_lr, pilot_steps, val_loss: {candidate: loss or "
                               f"null}}, chosen}}, got {choice!r}")
    fit = d.get("router_fit")
    if fit is not None and not (isinstance(fit, dict) and _count(fit.get("steps")) and _count(fit.get("descriptions"))):
        raise bad("router_fit", f"must be null or {{steps, descriptions, ...}}, got {fit!r}")
    return d


def read_compute(train_dir: Path) -> dict[str, dict]:
    """``{model: compute.json}`` of every ``train/<model>/`` that has one (the run's trained models)."""
    out = {}
    for path in sorted(Path(train_dir).glob(f"*/{COMPUTE_FILE}")):
        try:
            d = load_json(read_text(path))
        except (*READ_ERRORS, json.JSONDecodeError, LimitError) as e:
            raise DataError(f"cannot be read as JSON ({e})", file=str(path), fix=FIX) from None
        out[path.parent.name] = _check(d, path)
    return out


def trained_of(row: str, compute: dict[str, dict]) -> str | None:
    """The trained model (a key of ``compute``) whose training result row ``row`` is or is built over; None: a
    row without training (heuristics, the backbone) or whose model's compute is not recorded."""
    if row in compute:
        return row
    r = entry(row)
    if r is None:
        return None
    if r.kind == "condition":
        base, variant = split_row(row)
        under = trained_of(base, compute)
        again = f"{under}-{variant}"  # a condition that trains its models again (router-only)
        return again if again in compute else under
    if r.kind == "ablation":
        return ABLATED if ABLATED in compute else None
    models = [n for n in r.needs if n in ROWS and ROWS[n].kind == "model" and n in compute]
    return models[0] if models else None


def _g(x: float) -> str:
    return f"{x:g}"


def _choice(c: dict | None, key: str, detail: bool) -> str:
    if c is None or c["key"] != key:
        return ""
    if not detail:
        return " (chosen)"
    shown = [f"{k} → {'diverged' if v is None else f'{v:.4f}'}" for k, v in c["val_loss"].items()]
    shown = [f"**{s}**" if s.startswith(f"{_g(c['chosen'])} ") else s for s in shown]
    return f" (chosen; validation loss {', '.join(shown)})"


def rates_cell(d: dict, detail: bool = True) -> str:
    """The learning rates a model was trained at, and how each was set (``detail``: each candidate's validation
    loss)."""
    parts = []
    if d["specialisation"]:
        parts.append(f"experts {_g(d['specialisation']['lr'])} (specialisation)")
    for key, what in (("lr", "layers and experts"), ("router_lr", "routers")):
        if d[key] is not None:
            parts.append(f"{what} {_g(d[key])}{_choice(d['lr_choice'], key, detail)}")
    if fit := d.get("router_fit"):
        parts.append(f"router first fitted to its routing targets ({fit['steps']} steps over {fit['descriptions']:,} "
                     f"descriptions, no backbone{'; kept: no checkpoint beat it' if d.get('best_step') == 0 else ''})")
    return "; ".join(parts) or "—"


def _pilots(d: dict, model: str, detail: bool) -> str:
    c = d["lr_choice"]
    if c is None or not detail:
        return "—" if c is None else f"`{model}`'s"
    cost = f" ({c['examples']:,} examples)" if _count(c.get("examples")) else ""
    return f"{len(c['val_loss'])} × {c['pilot_steps']} steps{cost}"


def budget(run_dir: Path, models: list[str]) -> str | None:
    """The training examples each trained model of ``models`` saw, in one phrase (None: none recorded): e.g. "every
    trained row saw 384 training examples (moe, promoe: 320 specialising their experts + 64 training routers; dense,
    upcycled: 384 end to end)"."""
    compute = read_compute(Path(run_dir) / "train")
    trained = {m: compute[m] for m in models if m in compute}
    if not trained:
        return None
    groups: dict[str, list[str]] = {}
    for m, d in trained.items():
        spec = d["specialisation"]
        how = (f"{spec['examples']:,} specialising their experts + {d['examples']:,} training " +
               ("routers" if d["lr"] is None else "the model")) if spec else f"{d['examples']:,} end to end"
        groups.setdefault(how, []).append(m)
    totals = {d["examples_total"] for d in trained.values()}
    head = f"every trained row saw {totals.pop():,} training examples" if len(totals) == 1 else \
        "the trained rows saw " + ", ".join(f"{m} {d['examples_total']:,}" for m, d in trained.items()) + \
        " training examples"
    return head + " (" + "; ".join(f"{', '.join(ms)}: {how}" for how, ms in groups.items()) + ")"


def section(run_dir: Path, sig: dict) -> list[str]:
    """REPORT.md's "Compute per row": every row that stands on a trained model of the run in ``run_dir``
    (:func:`read_compute`), its ROUGE-L and that training's examples seen, steps and learning rates (empty for a
    run that recorded none)."""
    compute = read_compute(Path(run_dir) / "train")
    rows = [(m, t) for m in sig["models"] if (t := trained_of(m, compute)) is not None]
    if not rows:
        return []
    budgets = sorted({d["budget"] for d in compute.values() if "budget" in d})
    out = ["## Compute per row", "",
           "Training each row stands on, next to its score: examples seen (optimizer steps × batch size) by the "
           "specialisation of the experts a model starts from (moe, promoe: `experts.steps`) and by its own training; "
           "learning rates as trained, those chosen with each candidate's validation loss (pilots on the validation "
           "tasks, never the test tasks; the winner in bold), and what the pilots cost. A row built over a trained "
           "model (routers over its experts, ablations, in-context and few-shot rows) inherits that model's compute "
           "(its rates and pilots are detailed on the model's own row) "
           "— few-shot rows add their fine-tuning on each test task's positive examples. Budget: "
           + (", ".join(f"`train.budget={b}`" for b in budgets) or "not recorded")
           + (" (a model that does not start from the specialised experts trains the specialisation's steps as "
              "well as its own)." if "matched" in budgets else "."), ""]
    table = []
    for m, t in rows:
        d, ci = compute[t], sig["models"][m].get("rougeL_instance")
        spec = d["specialisation"]
        score = "" if ci is None else f"{ci['mean']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"
        table.append([m, score, t, f"{spec['examples'] if spec else 0:,} + {d['examples']:,} = {d['examples_total']:,}",
                      f"{spec['steps'] if spec else 0} + {d['steps']}", rates_cell(d, m == t), _pilots(d, t, m == t)])
    head = ["row", "ROUGE-L [95% CI]", "trained model", "examples seen (specialisation + own)",
            "steps (specialisation + own)", "learning rates", "LR pilots"]
    return out + ["| " + " | ".join(head) + " |", "|---|---:|---|---:|---:|---|---|",
                  *("| " + " | ".join(r) + " |" for r in table), ""]
