"""promoe.benchmarks.encoder_separability: the rule of an unseen phrasing, read off description embeddings."""

from __future__ import annotations

import json

import numpy as np

from promoe.benchmarks.encoder_separability import main, separability
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


def test_command_writes_its_table(tmp_path, capsys) -> None:
    assert main(["--encoder", "hashing", "--json", str(tmp_path / "sep.json")]) == 0
    out = json.loads((tmp_path / "sep.json").read_text())
    assert out["encoder"] == "hashing" and set(out["accuracy"]) == {"nearest centroid", "LDA (shrinkage 0.5)",
                                                                     "logistic regression (C=10)"}
    assert all(0 <= a["test"] <= 1 for a in out["accuracy"].values()) and "test phrasings" in capsys.readouterr().out
