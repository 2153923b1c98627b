"""promoe.benchmarks.encoder_separability: the rule of an unseen phrasing, read off description embeddings."""

from __future__ import annotations

import json

import numpy as np

from promoe.benchmarks.encoder_separability import main, separability, wordings
from promoe.data.synth import N_PHRASINGS, RULES


def _emb(signal: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rule = np.repeat(np.eye(len(RULES)), N_PHRASINGS, axis=0)  # the rule's direction ...
    x = signal * np.hstack([rule, np.zeros((len(rule), 24))]) + rng.normal(size=(len(rule), len(RULES) + 24))
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # ... plus phrasing noise


def test_rules_written_into_the_embedding_are_read_and_noise_is_not() -> None:
    clear, noise = separability(_emb(20.0)), separability(_emb(0.0))
    assert all(acc == {"leave_one_out": 1.0, "test": 1.0} for acc in clear.values())
    assert all(acc["test"] < 0.5 and acc["leave_one_out"] < 0.5 for acc in noise.values())


def test_composed_wordings_are_fitted_in_every_split() -> None:
    """Held-out phrasings that carry their rule in words the training phrasings lack: read at chance from the
    training phrasings alone, and read when composed wordings with those words are fitted too."""
    signal, noise = _emb(20.0), _emb(0.0)
    p = np.tile(np.arange(N_PHRASINGS), len(RULES))
    x = np.where((p >= 4)[:, None], signal, noise)
    rules = np.repeat(np.arange(len(RULES)), 30)
    extra = np.hstack([np.eye(len(RULES))[rules], np.zeros((len(rules), 24))])
    alone, helped = separability(x), separability(x, extra=extra, extra_rule=rules)
    assert all(a["test"] < 0.5 for a in alone.values()) and all(a["test"] == 1.0 for a in helped.values())
    texts, of = wordings(3, disjoint=True)
    assert len(texts) == len(of) and set(of.tolist()) == set(range(len(RULES)))
    held_only = {"leftmost", "rightmost", "initial", "final"}
    assert not any(set(t.lower().rstrip(".").replace(",", "").split()) & held_only for t in texts)


def test_command_writes_its_table(tmp_path, capsys) -> None:
    assert main(["--encoder", "hashing", "--wordings", "2", "--json", str(tmp_path / "sep.json")]) == 0
    out = json.loads((tmp_path / "sep.json").read_text())
    (row,) = out["encoders"]
    assert row["encoder"] == "hashing" and row["wordings_per_phrasing"] == 2
    assert set(row["accuracy"]) == {"nearest centroid", "LDA (shrinkage 0.5)", "logistic regression (C=10)"}
    assert all(0 <= a["test"] <= 1 for a in row["accuracy"].values()) and "test phrasings" in capsys.readouterr().out
