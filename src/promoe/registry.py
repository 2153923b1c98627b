"""Every row of the experiment, declared once.

A *row* is one scored system of a run: a heuristic floor (``copy_demo``), a model (``promoe``), a
router over the trained ``moe``'s experts (``knn``), an ablation of ``promoe``'s router input
(``promoe-shuffled``) or a condition applied to models (``dense-icl``, ``moe-fewshot``). Each is a
:class:`Row` registered here with its name, kind, one-line title, the config key that selects it and
how it is built; config validation, the run's stages, the significance tests, figures and REPORT.md
all read this registry, so adding a row is its builder plus one :func:`register` call.

Builders are given as ``"module:function"`` strings and imported on first use (the lazy mapping of
``transformers``' auto classes), so this module imports nothing of the project: the config can
check names against it, and the analysis can order rows, without loading any model code. A
callable works as well (tests register rows that way).

Builder signatures, by kind (``ctx`` is :class:`promoe.stages.context.RunContext`, ``row`` the entry):

* ``heuristic``: ``build(task, instance) -> str``, the prediction;
* ``model``: ``build(ctx, row) -> Variant``, the model with the descriptions its router sees;
* ``router``: ``build(ctx, row) -> Variant`` over the trained ``moe``'s experts (``ctx.trained["moe"]``);
* ``ablation``: ``build(ctx, row) -> {test task: text promoe's router sees}`` (tasks left out: not scored);
* ``condition``: ``build(ctx, row, bases) -> None``, scoring ``<base>-<name>`` for each selected base model
  (and, for a condition that ``carries`` them, the run's headroom routers and ablations again inside it).

Model, router and ablation rows are scored together in one zero-shot generation pass; a condition's rows in
a pass of their own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["heuristic", "model", "router", "ablation", "condition"]

GROUPS: dict[str, str] = {
    "zero-shot": "Zero-shot models and heuristic floors",
    "routing": "Routing baselines (zero-shot routers on the trained `moe`'s experts)",
    "ablation": "Ablations of `promoe`'s router input (prompt unchanged)",
    "router_only": "Router-only condition (trained and scored on the instance input alone: the task reaches a "
                   "model only through its router)",
    "adaptation": "In-context (Definition + positive examples) and few-shot fine-tuning",
    "ceiling": "Ceiling, never a result: the best single expert per task chosen on the very instances scored",
    "other": "Other rows",
}
"""Report groups in report order, with their section titles."""

GROUP_OF_KIND: dict[str, str] = {"heuristic": "zero-shot", "model": "zero-shot", "router": "routing",
                                 "ablation": "ablation", "condition": "adaptation"}

ROWS_PACKAGE = "promoe.rows"
"""The only package whose modules a builder string may name: configs name rows, never code."""

REFERENCE = "promoe"
"""The row every other row is compared with (paired tests, ablations)."""
HEADROOM = ("uniform", "oracle")
"""The floor and ceiling of the routing headroom: every expert equally, and the best single expert per task."""
CEILING = "oracle_insample"
"""The in-sample ceiling: the oracle's choice made on the scored instances; reported apart, never compared as a result."""
ABLATED = "promoe"
"""The model whose router input the ablations replace; an ablation row is ``<ABLATED>-<name>``."""


@dataclass(frozen=True)
class Row:
    """One row (or, for ``condition``, one family of rows ``<base>-<name>``) of the experiment.

    ``select`` is the config key that turns the row on: a list key holds the row's ``name`` (e.g.
    ``compare.routers``), a boolean key turns it on when true (``eval.backbone``), None: always on.
    For a condition, ``select`` lists the base models it applies to and ``over`` says which models may
    be listed: ``models`` (every model row) or ``trained`` (models with ``trained=True``).
    ``needs`` names what the row is built from: trained models (``"moe"``) and ``"moe_profiles"``
    (the trained ``moe``'s routing of the training tasks, made while it is in memory).
    """

    name: str
    kind: Kind
    title: str
    build: str | Callable[..., Any]
    select: str | None = None
    trained: bool = False
    over: Literal["models", "trained"] | None = None
    needs: tuple[str, ...] = ()
    default: bool = True
    """Whether the selecting list holds the row by default (opt-in rows: False)."""
    arch: str = ""
    """A trained model row: the architecture it builds (``dense``, ``moe``, ``promoe``); empty: its name."""
    section: str = ""
    """The report group (a key of :data:`GROUPS`) when it is not its kind's (:data:`GROUP_OF_KIND`)."""
    carries: bool = False
    """A condition that builds the run's headroom routers (over ``moe``) and ablations (over ``promoe``) again
    inside it: rows ``uniform-<name>``, ``promoe-shuffled-<name>`` (:meth:`carried`)."""

    def carried(self) -> list[str]:
        """The router and ablation rows a ``carries`` condition may build again inside it (their names in it)."""
        if not self.carries:
            return []
        return [f"{n}-{self.name}" for n in (*HEADROOM, *(a.row_names()[0] for a in of_kind("ablation")))]

    @property
    def group(self) -> str:
        return self.section or GROUP_OF_KIND[self.kind]

    def builder(self) -> Callable[..., Any]:
        """The build function, imported on first use when given as ``"module:function"``."""
        if callable(self.build):
            return self.build
        module, _, attr = self.build.partition(":")
        return getattr(importlib.import_module(module), attr)

    def row_names(self, bases: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The row names this entry produces (``<base>-<name>`` for conditions, ``promoe-<name>`` for ablations)."""
        if self.kind == "condition":
            return [f"{b}-{self.name}" for b in bases]
        if self.kind == "ablation":
            return [f"{ABLATED}-{self.name}"]
        return [self.name]


ROWS: dict[str, Row] = {}
"""Registered rows by name, in registration order (the report's order within a group)."""


def register(row: Row, *, replace: bool = False) -> Row:
    """Add ``row`` to the registry (``replace``: overwrite an entry of the same name); returns it."""
    if row.kind not in GROUP_OF_KIND:
        raise ValueError(f"row {row.name!r}: kind {row.kind!r} is not one of {list(GROUP_OF_KIND)}")
    if row.section and row.section not in GROUPS:
        raise ValueError(f"row {row.name!r}: section {row.section!r} is not one of {list(GROUPS)}")
    if row.carries and row.kind != "condition":
        raise ValueError(f"row {row.name!r}: only a condition carries other rows (carries=True)")
    if not row.name or "-" in row.name or "/" in row.name:
        raise ValueError(f"row name {row.name!r}: use letters, digits and '_' (a '-' separates base and variant)")
    if isinstance(row.build, str) and not (row.build.startswith(ROWS_PACKAGE + ".") and ":" in row.build):
        raise ValueError(f"row {row.name!r}: a builder named by a string must be '{ROWS_PACKAGE}.<module>:<function>' "
                         f"(got {row.build!r}); pass any other builder as a function")
    if row.name in ROWS and not replace:
        raise ValueError(f"row {row.name!r} is already registered (pass replace=True to overwrite it)")
    ROWS[row.name] = row
    return row


def arch(name: str) -> str:
    """The architecture model row ``name`` builds (:attr:`Row.arch`; a name the registry does not hold:
    itself)."""
    r = ROWS.get(name)
    return r.arch or r.name if r is not None else name


def unregister(name: str) -> None:
    ROWS.pop(name, None)


def of_kind(*kinds: str) -> list[Row]:
    return [r for r in ROWS.values() if r.kind in kinds]


def choices(key: str) -> list[str]:
    """The names a list-valued config key (``compare.routers``, ``train.models``, ...) may hold."""
    out: list[str] = []
    for r in ROWS.values():
        if r.select == key and r.kind != "condition":
            out.append(r.name)
        elif r.select == key:  # a condition's list names base models
            out += [m.name for m in of_kind("model") if r.over == "models" or m.trained]
    return out


def defaults(key: str) -> list[str]:
    """The names a list-valued config key holds by default (:func:`choices` without opt-in rows)."""
    return [n for n in choices(key) if n not in ROWS or ROWS[n].default]


def is_selected(row: Row, cfg: Any) -> bool:
    """Whether ``cfg`` turns ``row`` on (a condition: when its list of base models is not empty)."""
    if row.select is None:
        return True
    value = config_value(cfg, row.select)
    if isinstance(value, bool) or row.kind == "condition":
        return bool(value)
    return row.name in value


def selected(cfg: Any, *kinds: str) -> list[Row]:
    """The rows (of ``kinds``; default all) ``cfg`` turns on, in the order its lists name them
    (rows selected by a flag or always on first, in registry order)."""
    rows = [r for r in ROWS.values() if (not kinds or r.kind in kinds) and is_selected(r, cfg)]

    def position(r: Row) -> int:
        value = None if r.select is None else config_value(cfg, r.select)
        return value.index(r.name) if isinstance(value, list) and r.name in value else -1

    return sorted(rows, key=position)  # stable: registry order among equals


def config_value(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# -- names of result rows (analysis side: files are named after rows) ---------------------------------


def split_row(name: str) -> tuple[str, str]:
    """``(base, variant)`` of a row name: ``"promoe-icl"`` -> ``("promoe", "icl")``; no variant -> ``""``; a
    condition over a variant row is the condition: ``"promoe-shuffled-router_only"`` -> ``("promoe-shuffled",
    "router_only")``."""
    base, _, last = name.rpartition("-")
    if base and last in conditions():  # a condition over any row: "promoe-shuffled-router_only"
        return base, last
    base, _, variant = name.partition("-")
    return base, variant


def entry(name: str) -> Row | None:
    """The registry entry behind a result row name (``promoe-shuffled`` -> the ``shuffled`` ablation)."""
    if name in ROWS and ROWS[name].kind not in ("ablation", "condition"):
        return ROWS[name]
    base, variant = split_row(name)
    r = ROWS.get(variant)
    if r is not None and (r.kind == "condition" or r.kind == "ablation" and base == ABLATED):
        return r
    return None


def row_group(name: str) -> str:
    """The report group of a result row (a key of :data:`GROUPS`); ``other`` for unregistered names,
    ``ablation`` for any other variant of :data:`ABLATED`."""
    r = entry(name)
    if r is not None:
        return r.group
    base, variant = split_row(name)
    return "ablation" if variant and base == ABLATED else "other"


def row_order() -> tuple[str, ...]:
    """Every result row name the registry can produce, in report order (conditions over every model, and the
    rows a condition carries)."""
    models = [m.name for m in of_kind("model")]
    by_group: dict[str, list[str]] = {g: [] for g in GROUPS}
    for r in ROWS.values():
        by_group[r.group] += r.row_names(models if r.over == "models" else
                                         [m.name for m in of_kind("model") if m.trained]) + r.carried()
    return tuple(n for g in GROUPS for n in by_group[g])


def model_key(name: str) -> tuple[int, int, str]:
    """Sort key of result rows: group, then registry order, then the name."""
    order = row_order()
    pos = order.index(name) if name in order else len(order)
    return list(GROUPS).index(row_group(name)), pos, name


def bases() -> tuple[str, ...]:
    """Rows that are their own base (no variant): heuristics, models and routers, in order (one colour each)."""
    return tuple(r.name for r in ROWS.values() if r.kind in ("heuristic", "model", "router"))


def conditions() -> tuple[str, ...]:
    return tuple(r.name for r in of_kind("condition"))


def title(name: str) -> str:
    r = entry(name)
    return r.title if r is not None else name


# -- the rows of the experiment -------------------------------------------------------------------------

_R = ROWS_PACKAGE
for _row in (
    Row("copy_input", "heuristic", "copy the instance input", f"{_R}.heuristics:copy_input"),
    Row("copy_demo", "heuristic", "copy a positive example's output", f"{_R}.heuristics:copy_demo"),
    Row("backbone", "model", "the untrained backbone", f"{_R}.models:backbone", select="eval.backbone"),
    Row("dense", "model", "dense: the backbone's FFN fine-tuned, same activated parameters",
        f"{_R}.models:trained", select="train.models", trained=True),
    Row("moe", "model", "static token router (over the specialised experts when experts.specialise)",
        f"{_R}.models:trained", select="train.models", trained=True),
    Row("promoe", "model", "Proactive Router: routing generated from the task description", f"{_R}.models:trained",
        select="train.models", trained=True),
    Row("upcycled", "model", "sparse-upcycled MoE trained end to end, never specialised (the standard recipe)",
        f"{_R}.models:trained", select="train.models", trained=True, default=False, arch="moe"),
    Row("knn", "router", "routing of the nearest training tasks by description", f"{_R}.routers:knn",
        select="compare.routers", needs=("moe", "moe_profiles")),
    Row("skill", "router", "Symbolic-MoE-style skill profiles", f"{_R}.routers:skill", select="compare.routers",
        needs=("moe", "moe_profiles")),
    Row("uniform", "router", "every expert equally", f"{_R}.routers:uniform", select="compare.routers",
        needs=("moe",)),
    Row("random", "router", "random experts per token", f"{_R}.routers:random", select="compare.routers",
        needs=("moe",)),
    Row("oracle", "router", "best single expert per task, chosen on its positive examples", f"{_R}.oracle:oracle",
        select="compare.routers", needs=("moe",)),
    Row(CEILING, "router", "ceiling: the single expert of lowest reference NLL on the scored instances themselves",
        f"{_R}.oracle:oracle_insample", select="compare.routers", needs=("moe",), default=False, section="ceiling"),
    Row("shuffled", "ablation", "another task's description", f"{_R}.ablations:builtin",
        select="compare.ablations", needs=("promoe",)),
    Row("empty", "ablation", "an empty description", f"{_R}.ablations:builtin", select="compare.ablations",
        needs=("promoe",)),
    Row("random_text", "ablation", "random text", f"{_R}.ablations:builtin", select="compare.ablations",
        needs=("promoe",)),
    Row("category", "ablation", "the category name only", f"{_R}.ablations:builtin", select="compare.ablations",
        needs=("promoe",)),
    Row("paraphrase", "ablation", "a paraphrase (tasks that have one)", f"{_R}.ablations:paraphrase",
        select="compare.ablations", needs=("promoe",)),
    Row("icl", "condition", "Definition + positive examples in the prompt", f"{_R}.conditions:in_context",
        select="compare.icl_models", over="models"),
    Row("fewshot", "condition", "fine-tuned on the task's positive examples", f"{_R}.conditions:fewshot",
        select="compare.fewshot_models", over="trained"),
    Row("router_only", "condition", "trained and scored on the instance input alone, no Definition in the prompt",
        f"{_R}.conditions:router_only", select="compare.router_only_models", over="trained", section="router_only",
        carries=True),
):
    register(_row)
