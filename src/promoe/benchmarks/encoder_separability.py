"""How well a description encoder separates the synthetic suite's rules on phrasings it has not seen.

A task-level router reads only the embedding of a task's Definition, so on held-out phrasings it can route no
better than the embedding separates the rules. This measures that ceiling with three readers of the
embeddings, each fitted on the training phrasings of every rule and asked the rule of the others: nearest rule
centroid (cosine), shrinkage LDA and logistic regression (scikit-learn). Splits as in the mechanism check
(:mod:`promoe.data.synth`): each of the training phrasings held out in turn (leave one phrasing out, the
validation protocol) and the test phrasings with all training phrasings fitted (reported, never selected on).
``--wordings N`` also fits N composed phrasings per training phrasing (what the router reads in meta-training,
``data.synth_paraphrases``); ``--disjoint`` keeps only composed phrasings without a word that occurs in a
held-out phrasing and in no training phrasing (so a gain is not the synonym list covering the test's words).

Encoders (``--encoder``, default all of them):

* ``minilm`` — all-MiniLM-L6-v2 (the default ``model.task_encoder``);
* ``backbone-mean`` — the mean of the backbone's last hidden states over the Definition's tokens;
* ``backbone-prompt`` — the backbone's hidden state at the last token of its chat template holding the
  Definition and a word list to apply it to (what the model is about to answer); the layer is chosen among
  four by the leave-one-out accuracy, never on the test phrasings;
* ``hashing`` — signed word hashing (no weights; the floor).

    python -m promoe.benchmarks.encoder_separability [--encoder NAME ...] [--wordings N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from promoe.data.synth import N_PHRASINGS, RULES
from promoe.data.synth_wordings import composed_phrasings

READERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {}
ENCODERS = ("minilm", "backbone-mean", "backbone-prompt", "hashing")
PROBE = "ant bear cat dog egg fox"
"""The word list the ``backbone-prompt`` template asks the Definition to be applied to."""


def _reader(name: str):
    def add(fn):
        READERS[name] = fn
        return fn
    return add


@_reader("nearest centroid")
def _centroid(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    cent = np.stack([x[y == c].mean(0) for c in np.unique(y)])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    return np.unique(y)[(q @ cent.T).argmax(1)]


@_reader("LDA (shrinkage 0.5)")
def _lda(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.5).fit(x, y).predict(q)


@_reader("logistic regression (C=10)")
def _logistic(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    return LogisticRegression(C=10.0, max_iter=5000).fit(x, y).predict(q)


def separability(emb: np.ndarray, *, train_phrasings: int = 4, extra: np.ndarray | None = None,
                 extra_rule: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """``{reader: {"leave_one_out": accuracy, "test": accuracy}}`` for ``emb`` (rules × phrasings, d), rows
    L2-normalised, phrasing ``p`` of rule ``r`` at ``r * N_PHRASINGS + p``; ``extra`` (m, d) more training rows
    of rules ``extra_rule`` (m,), fitted in every split (composed phrasings)."""
    n_rules = len(emb) // N_PHRASINGS
    y = np.repeat(np.arange(n_rules), N_PHRASINGS)
    p = np.tile(np.arange(N_PHRASINGS), n_rules)
    train = p < train_phrasings
    ex = np.zeros((0, emb.shape[1])) if extra is None else extra
    ey = np.zeros(0, dtype=int) if extra_rule is None else extra_rule

    def fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.vstack([emb[rows], ex]), np.concatenate([y[rows], ey])

    out = {}
    for name, read in READERS.items():
        loo = [read(*fit(train & (p != h)), emb[p == h]) == y[p == h] for h in range(train_phrasings)]
        test = read(*fit(train), emb[~train]) == y[~train]
        out[name] = {"leave_one_out": float(np.mean(loo)), "test": float(np.mean(test))}
    return out


def _texts() -> list[str]:
    return [r.phrasings[p] for r in RULES for p in range(N_PHRASINGS)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def wordings(n: int, *, train_phrasings: int = 4, disjoint: bool = False, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` composed phrasings per training phrasing of every rule, with their rules (``disjoint``: none with a word
    found only in held-out phrasings)."""
    held = {w for r in RULES for t in r.phrasings[train_phrasings:] for w in _words(t)}
    seen = {w for r in RULES for t in r.phrasings[:train_phrasings] for w in _words(t)}
    rng, texts, rules = random.Random(seed), [], []
    for i, rule in enumerate(RULES):
        drawn = composed_phrasings(rule.id, rule.phrasings, 8 * n * train_phrasings, rng)
        pool = [t for t in drawn if not (disjoint and _words(t) & (held - seen))]
        picked = rng.sample(pool, min(len(pool), n * train_phrasings))
        texts += picked
        rules += [i] * len(picked)
    return texts, np.array(rules, dtype=int)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _backbone_states(texts: list[str], prompt: bool) -> np.ndarray:
    """(n, layers + 1, d): per text, the mean (``prompt`` False) or the last-token (True) hidden state per layer."""
    import torch

    from promoe.config import ModelConfig
    from promoe.model.backbone import load_backbone

    bb = load_backbone(ModelConfig())
    rows = []
    with torch.no_grad():
        for t in texts:
            s = bb.tokenizer.apply_chat_template([{"role": "user", "content": f"{t}\nInput: {PROBE}"}], tokenize=False,
                                                 add_generation_prompt=True) if prompt else t
            hs = bb.model(**bb.tokenizer(s, return_tensors="pt"), output_hidden_states=True).hidden_states
            rows.append(np.stack([(h[0, -1] if prompt else h[0].mean(0)).float().numpy() for h in hs]))
    return np.stack(rows)


def embed(encoder: str, texts: list[str]) -> np.ndarray | dict[int, np.ndarray]:
    """Rows L2-normalised; ``backbone-prompt``: ``{layer: rows}`` for the candidate layers (centred first: the
    last-token states share a large common part)."""
    if encoder.startswith("backbone"):
        states = _backbone_states(texts, prompt=encoder == "backbone-prompt")
        if encoder == "backbone-mean":
            return _unit(states[:, -1])
        n = states.shape[1] - 1
        return {layer: _unit(states[:, layer] - states[:, layer].mean(0)) for layer in (n // 4, n // 2, 3 * n // 4, n)}
    from promoe.config import ModelConfig
    from promoe.model.task_encoder import build_task_encoder

    return _unit(build_task_encoder(ModelConfig(task_encoder=encoder)).encode(texts).numpy())


def measure(encoder: str, *, n_wordings: int = 0, disjoint: bool = False) -> dict:
    """The separability of ``encoder`` (:func:`separability`), with ``n_wordings`` composed phrasings per training
    phrasing; for ``backbone-prompt`` at the layer with the best leave-one-out accuracy."""
    extra, extra_rule = wordings(n_wordings, disjoint=disjoint) if n_wordings else ([], None)
    texts = _texts()
    emb = embed(encoder, texts + extra)
    candidates = emb if isinstance(emb, dict) else {None: emb}
    results = {layer: separability(x[:len(texts)], extra=x[len(texts):] if extra else None, extra_rule=extra_rule)
               for layer, x in candidates.items()}
    layer = max(results, key=lambda k: np.mean([a["leave_one_out"] for a in results[k].values()]))
    return {"encoder": encoder, "layer": layer, "wordings_per_phrasing": n_wordings, "disjoint": disjoint,
            "accuracy": results[layer]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    ap.add_argument("--wordings", type=int, default=0, help="composed phrasings per training phrasing also fitted")
    ap.add_argument("--disjoint", action="store_true", help="only composed phrasings without a held-out-only word")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    if args.wordings < 0:
        ap.error("--wordings must be 0 or more")
    rows = [measure(e, n_wordings=args.wordings, disjoint=args.disjoint) for e in args.encoder]
    print(f"rule of an unseen phrasing ({len(RULES)} rules, chance {1 / len(RULES):.3f}); fitted on the training "
          f"phrasings{f' and {args.wordings} composed ones each' if args.wordings else ''}"
          f"{' (no held-out-only word)' if args.disjoint else ''}")
    for r in rows:
        at = "" if r["layer"] is None else f" (layer {r['layer']}, chosen on leave-one-out)"
        print(f"{r['encoder']}{at}")
        for name, acc in r["accuracy"].items():
            print(f"  {name:28s} leave one training phrasing out {acc['leave_one_out']:.3f}   test phrasings "
                  f"{acc['test']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rules": len(RULES), "phrasings": N_PHRASINGS, "encoders": rows}, indent=2)
                             + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
