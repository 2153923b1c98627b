"""How well a description encoder separates the synthetic suite's rules on phrasings it has not seen.

A task-level router reads only the embedding of a task's Definition, so on held-out phrasings it can route no
better than the embedding separates the rules. This measures that ceiling with three readers of the
embeddings, each fitted on the training phrasings of every rule and asked the rule of the others: nearest rule
centroid (cosine), shrinkage LDA and logistic regression (scikit-learn). Splits as in the mechanism check
(:mod:`promoe.data.synth`): each of the training phrasings held out in turn (leave one phrasing out, the
validation protocol) and the test phrasings with all training phrasings fitted (reported, never selected on).

    python -m promoe.benchmarks.encoder_separability [--encoder minilm|backbone|hashing] [--json OUT]

``backbone``: the mean of the backbone's last hidden states over the Definition's tokens.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from promoe.data.synth import N_PHRASINGS, RULES

READERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {}


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


def separability(emb: np.ndarray, *, train_phrasings: int = 4) -> dict[str, dict[str, float]]:
    """``{reader: {"leave_one_out": accuracy, "test": accuracy}}`` for ``emb`` (rules × phrasings, d), rows
    L2-normalised, phrasing ``p`` of rule ``r`` at ``r * N_PHRASINGS + p``."""
    n_rules = len(emb) // N_PHRASINGS
    y = np.repeat(np.arange(n_rules), N_PHRASINGS)
    p = np.tile(np.arange(N_PHRASINGS), n_rules)
    train = p < train_phrasings
    out = {}
    for name, read in READERS.items():
        loo = [read(emb[train & (p != h)], y[train & (p != h)], emb[p == h]) == y[p == h] for h in range(train_phrasings)]
        out[name] = {"leave_one_out": float(np.mean(loo)),
                     "test": float(np.mean(read(emb[train], y[train], emb[~train]) == y[~train]))}
    return out


def _texts() -> list[str]:
    return [r.phrasings[p] for r in RULES for p in range(N_PHRASINGS)]


def embed(encoder: str, texts: list[str]) -> np.ndarray:
    """Rows L2-normalised."""
    if encoder == "backbone":
        import torch

        from promoe.config import ModelConfig
        from promoe.model.backbone import load_backbone

        bb = load_backbone(ModelConfig())
        with torch.no_grad():
            rows = [bb.model(**bb.tokenizer(t, return_tensors="pt"), output_hidden_states=True)
                    .hidden_states[-1][0].mean(0).float().numpy() for t in texts]
        x = np.stack(rows)
    else:
        from promoe.config import ModelConfig
        from promoe.model.task_encoder import build_task_encoder

        x = build_task_encoder(ModelConfig(task_encoder=encoder)).encode(texts).numpy()
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="minilm", choices=["minilm", "backbone", "hashing"])
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    result = {"encoder": args.encoder, "rules": len(RULES), "phrasings": N_PHRASINGS,
              "accuracy": separability(embed(args.encoder, _texts()))}
    print(f"{args.encoder}: rule of an unseen phrasing ({len(RULES)} rules, chance {1 / len(RULES):.3f})")
    for name, acc in result["accuracy"].items():
        print(f"  {name:28s} leave one training phrasing out {acc['leave_one_out']:.3f}   test phrasings "
              f"{acc['test']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
