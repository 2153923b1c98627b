"""Throughput against the machine's own limit: training and evaluation of the default configuration as a
fraction of this CPU's dense matmul peak.

* ``peak``: FLOP/s of a square matmul (``2 n^3`` FLOPs), medians over repeats, in fp32 and — only where the CPU
  runs it natively (:func:`promoe.resources.native_bf16`) — in bf16;
* ``train``: optimizer steps of ``promoe`` (the default preset's model, over upcycled experts — throughput does
  not depend on the weights — frozen where the preset freezes its specialised experts) through the project's own :class:`promoe.training.trainer.Trainer` on one fixed batch of
  ``train.batch_size`` Tk-Instruct prompts, the lower-layer cache off so every step does the same work;
* ``eval``: zero-shot generation of one batch of ``eval.batch_size`` instances, ``eval.max_new_tokens`` new
  tokens each (EOS suppressed, so every call does the same work), as the evaluation stage runs it.

FLOPs are counted, not estimated: :class:`torch.utils.flop_counter.FlopCounterMode` records every matmul,
attention and convolution of one step or call (elementwise work is not counted, so the fraction is a matmul
utilisation); the timed repeats run without the counter. ``fraction_of_peak`` = counted FLOPs / median
seconds / the peak of the dtype the run computes in (fp32 unless ``train.mixed_precision=bf16``).

Usage: ``python -m promoe.benchmarks.throughput [--quick] [--json OUT] [key=value ...]`` (config overrides).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from promoe.benchmarks import module_main
from promoe.benchmarks.generation import DEFINITION, prompts
from promoe.config import load_config
from promoe.data.examples import TrainExample
from promoe.resources import native_bf16
from promoe.setup import Setup, specialised_names
from promoe.training.trainer import Trainer


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, *, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` matmul in ``dtype`` on this machine's torch threads (after one warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return 2 * n**3 / _median_seconds(lambda: a @ b, repeats)


def peaks(*, quick: bool) -> dict[str, float]:
    """fp32 peak always, bf16 where native (emulated bf16 is no limit worth measuring against)."""
    n = 1024 if quick else 2048
    out = {"fp32": matmul_peak(torch.float32, n=n)}
    if native_bf16():
        out["bf16"] = matmul_peak(torch.bfloat16, n=n)
    return out


def _training_examples(setup: Setup, n: int) -> list[TrainExample]:
    """``n`` Tk-Instruct training examples of the benchmark task: the prompt's labels ignored, a short answer."""
    ids, mask = prompts(setup, n)
    answer = setup.tokenizer(" yes", add_special_tokens=False)["input_ids"]
    out = []
    for i in range(n):
        prompt = ids[i][mask[i].bool()].tolist()
        out.append(TrainExample(input_ids=tuple(prompt + answer), labels=tuple([-100] * len(prompt) + answer),
                                task="bench_task"))
    return out


def train(setup: Setup, *, steps: int) -> dict:
    """Seconds, tokens and counted FLOPs of one optimizer step of ``promoe`` on a fixed batch."""
    cfg = setup.cfg
    model = setup.model("promoe")
    if cfg.experts.specialise and cfg.experts.freeze:  # as in the run: the routers learn over frozen experts
        for n in specialised_names(model):
            model.get_parameter(n).requires_grad_(False)
    bs = cfg.train.batch_size
    examples = _training_examples(setup, bs)
    task_emb = {"bench_task": setup.encoder.encode([DEFINITION])[0]}
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, cfg=cfg.train, examples=examples, val_examples=examples, task_emb=task_emb,
                          pad_id=setup.tokenizer.pad_token_id, out_dir=Path(out), seed=cfg.seed)
        trainer.plan = [list(range(bs))] * (steps + 2)  # the same batch every step: the same work
        trainer.step(0)  # warm-up
        flops = _flops(lambda: trainer.step(1))
        seconds = _median_seconds(lambda: trainer.step(2), steps)
    tokens = sum(len(e.input_ids) for e in examples)
    return {"batch_size": bs, "tokens_per_step": tokens, "flops_per_step": flops, "seconds_per_step": seconds,
            "tokens_per_s": tokens / seconds, "flop_per_s": flops / seconds}


@torch.no_grad()
def evaluate(setup: Setup, *, repeats: int) -> dict:
    """Seconds and counted FLOPs of one zero-shot generation call of ``promoe`` on ``eval.batch_size`` instances."""
    cfg = setup.cfg
    model = setup.model("promoe").eval()
    bs, new = cfg.eval.batch_size, cfg.eval.max_new_tokens
    ids, mask = prompts(setup, bs)
    emb = setup.encoder.encode([DEFINITION]).expand(bs, -1)

    def call() -> torch.Tensor:
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=setup.tokenizer.pad_token_id, task_emb=emb,
                              task_keys=["bench_task"] * bs)

    call()  # warm-up
    flops = _flops(call)
    seconds = _median_seconds(call, repeats)
    return {"batch_size": bs, "prompt_tokens": int(ids.shape[1]), "new_tokens": new, "flops_per_batch": flops,
            "seconds_per_batch": seconds, "instances_per_s": bs / seconds, "flop_per_s": flops / seconds}


def run(*, quick: bool = False, preset: str = "default", overrides: Sequence[str] = ()) -> dict:
    """``train_fraction_of_peak`` and ``eval_fraction_of_peak`` of the preset's configuration, with the peaks."""
    cfg = load_config(preset, list(overrides))
    torch.manual_seed(cfg.seed)
    setup = Setup.load(cfg)
    dtype = "bf16" if cfg.train.mixed_precision == "bf16" else "fp32"
    peak = peaks(quick=quick)
    tr = train(setup, steps=2 if quick else 4)
    ev = evaluate(setup, repeats=1 if quick else 3)
    return {"preset": preset, "dtype": dtype, "peak_flop_per_s": peak, "train": tr, "eval": ev,
            "train_fraction_of_peak": tr["flop_per_s"] / peak[dtype],
            "eval_fraction_of_peak": ev["flop_per_s"] / peak[dtype]}


def main() -> None:
    module_main(run, __doc__, "smaller matmuls, fewer repeats")


if __name__ == "__main__":
    main()
