"""Shared fixtures: a tiny offline data folder laid out like the real one; seeded one-thread tiny tensors;
tiny backbones shared by the tests of one module (``tiny``, ``backbone``)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


def _task(name: str, category: str, n: int, *, meta: dict | None = None, n_pos: int = 2) -> dict:
    return {
        "Definition": [f"Solve {name}: answer with the label"],
        "Categories": [category],
        "Reasoning": [],
        "Domains": ["Toys"],
        "Source": ["unit"],
        "Positive Examples": [{"input": f"{name} demo {i}", "output": f"label{i}", "explanation": "e"}
                              for i in range(n_pos)],
        "Negative Examples": [],
        "Instances": [{"id": f"{name}-{i}", "input": f"{name} input {i}", "output": [f"label{i % 2}"]}
                      for i in range(n)],
        "_meta": {"task": name, **(meta or {})},
    }


def _write_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture
def tiny_tensors() -> Iterator[None]:
    """Seed torch and numpy; one intra-op thread while the test runs (tiny tensors, much faster on CPU).
    A module of tiny-tensor tests takes it for every test: ``pytestmark = pytest.mark.usefixtures(...)``."""
    torch.manual_seed(0)
    np.random.seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_data_root(tmp_path: Path) -> Path:
    """An offline data folder with 3 test tasks (1 complete), SNI (5, two with quirks of the official data),
    NIv1 and BIG-bench training tasks."""
    return make_tiny_data(tmp_path / "data")


@pytest.fixture(scope="module")
def tiny_data_root_module(tmp_path_factory) -> Path:
    """The same folder, shared by the tests of one module."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny") / "data")


def make_tiny_data(root: Path) -> Path:
    tests = ["task901_toy_entailment", "task902_toy_titles", "task903_toy_complete"]
    sni_train = [("task801_toy_qa", "Question Answering"), ("task802_toy_qg", "Question Generation"),
                 ("task803_toy_qa2", "Question Answering"), ("task804_toy_sentiment", "Sentiment Analysis"),
                 ("task805_toy_sentiment2", "Sentiment Analysis")]
    trains = [n for n, _ in sni_train] + ["task001_toy_niv1", "task062_bigbench_repeat"]
    split = root / "sni/splits/default"
    split.mkdir(parents=True)
    (split / "train_tasks.txt").write_text("\n".join(trains) + "\n")
    (split / "test_tasks.txt").write_text("\n".join(tests) + "\n")
    meta = []
    for i, name in enumerate(tests):
        meta.append({
            "task": name, "category": ["Textual Entailment", "Title Generation", "Word Analogy"][i],
            "Definition": f"Toy test task {name}.",
            "positive_examples": [{"input": f"pos {name} {j}", "output": f"out{j}", "explanation": ""}
                                  for j in range(2)],
            "negative_examples": [],
            "first_instances": [{"input": f"first {name} {j}", "output": f"ref{j}"} for j in range(i + 1)],
        })
    _write_gz(root / "sni/test_task_meta.jsonl.gz", meta)
    complete = _task(tests[2], "Word Analogy", 10)
    _write_gz(root / "sni/test.jsonl.gz", [complete])
    sni = [_task(n, c, 6) for n, c in sni_train]
    # the official data's quirks: an instance whose only reference is empty, a Definition of two strings
    sni[0]["Instances"][5]["output"] = [""]
    sni[4]["Definition"] = [sni[4]["Definition"][0], "A second definition string."]
    _write_gz(root / "sni/train.jsonl.gz", sni)
    niv1 = [
        _task("niv1_subtask001_toy", "Question Answering", 5, n_pos=0,
              meta={"collection": "niv1", "sni_task": "task001_toy_niv1"}),
        _task("niv1_subtask020_toy", "Answerability Classification", 5, n_pos=0,
              meta={"collection": "niv1", "sni_task": tests[0]}),
        _task("niv1_subtask003_toy", "Question Generation", 5, n_pos=0,
              meta={"collection": "niv1", "sni_task": "task003_excluded"}),
    ]
    _write_gz(root / "bigbench/niv1.jsonl.gz", niv1)
    bb = [_task(f"bb_family__sub{i}", "logical reasoning", 4, n_pos=0,
                meta={"collection": "bigbench", "bb_task": "family"}) for i in range(5)]
    bb.append(_task("bb_overlap", "zero-shot", 4, n_pos=0,
                    meta={"collection": "bigbench", "bb_task": "overlap",
                          "sni_test_dataset_overlap": [tests[1]]}))
    bb.append(_task("bb_single", "mathematics", 4, n_pos=0, meta={"collection": "bigbench", "bb_task": "single"}))
    _write_gz(root / "bigbench/bigbench.jsonl.gz", bb)
    _write_gz(root / "paraphrases/descriptions.jsonl.gz", [
        {"task": tests[0], "sni_split": "test", "descriptions": ["Decide whether one sentence implies the other.",
                                                                  "Say if the hypothesis follows."]},
        {"task": "task801_toy_qa", "sni_split": "train", "descriptions": ["Answer the question."]}])
    return root


@pytest.fixture
def real_data_root() -> Path:
    """The real offline packages, from $PROMOE_DATA or found beside the checkout (skipped otherwise)."""
    from promoe.data.location import find_data_root

    root = os.environ.get("PROMOE_DATA") or find_data_root()
    if not root or not (Path(root) / "sni/test_task_meta.jsonl.gz").exists():
        pytest.skip("no offline data packages ($PROMOE_DATA or a data/ folder beside the checkout)")
    return Path(root)


@pytest.fixture(scope="module")
def tiny():
    """The smoke preset's model config and its tiny backbone, shared by the tests of one module (they
    build models from copies of it). training/test_loop.py has a ``tiny`` of its own."""
    from promoe.config import load_config
    from promoe.model.backbone import load_backbone

    cfg = load_config("smoke").model
    return cfg, load_backbone(cfg, seed=0)


@pytest.fixture(scope="module")
def backbone():
    """The tiny llama of ``tests.helpers.DECODE_CFG``, shared by the tests of one module (decoding,
    evaluation, resumable passes: they build models from copies of it)."""
    from promoe.model.backbone import load_backbone
    from tests.helpers import DECODE_CFG

    torch.manual_seed(0)
    return load_backbone(DECODE_CFG, seed=0)
