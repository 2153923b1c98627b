"""promoe.stages.embed_wordings: the training tasks' other wordings — their own Paraphrases field, then the data
folder's paraphrase package — are embedded for the router; validation and test tasks' never are."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from promoe.config import ExperimentConfig
from promoe.data.paraphrases import PACKAGE
from promoe.data.schema import Instance, Task
from promoe.data.splits import TaskSplits
from promoe.model.task_encoder import HashingEncoder
from promoe.stages import embed_wordings


def _task(name: str, paraphrases: tuple[str, ...] = ()) -> Task:
    return Task(name=name, definition=f"Do {name}.", instances=(Instance("i", "x", ("y",)),), paraphrases=paraphrases)


def test_training_wordings_are_embedded_and_held_out_tasks_are_not(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / PACKAGE).parent.mkdir(parents=True)
    (root / "sni").mkdir()
    rows = [{"task": "b", "descriptions": ["B one.", "B two.", "B three."]},
            {"task": "v", "descriptions": ["V one."]}, {"task": "t", "descriptions": ["T one."]}]
    with gzip.open(root / PACKAGE, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    splits = TaskSplits(train=[_task("a", ("A one.", "A two.")), _task("b"), _task("c")], val=[_task("v")],
                        test=[_task("t")])
    cfg = ExperimentConfig()
    cfg.data.root, cfg.train.paraphrases = str(root), 2
    setup = SimpleNamespace(encoder=HashingEncoder(16))
    emb = embed_wordings(cfg, splits, setup)
    assert set(emb) == {"a", "b"}  # c has none; v and t are held out
    assert torch.equal(emb["a"], HashingEncoder(16).encode(["A one.", "A two."]))
    assert torch.equal(emb["b"], HashingEncoder(16).encode(["B one.", "B two."]))  # at most train.paraphrases
    cfg.train.paraphrases = 0
    assert embed_wordings(cfg, splits, setup) == {}
    cfg.train.paraphrases, cfg.data.root = 2, str(tmp_path / "nowhere")  # no data folder: own wordings only
    assert set(embed_wordings(cfg, splits, setup)) == {"a"}
