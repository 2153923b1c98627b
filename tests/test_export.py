"""``promoe export``: a task-routed model's sub-network for one task as a plain transformers checkpoint.

Parity checks on the tiny random llama: the exported folder, loaded by ``AutoModelForCausalLM`` alone,
gives the MoE model's logits and greedy generations for that task; refusals name the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn
from transformers import AutoModelForCausalLM

from promoe.cli import main
from promoe.config import ExperimentConfig, ModelConfig, to_dict
from promoe.errors import PromoeError
from promoe.export import MANIFEST, check_out_dir, export_model, export_task_model, task_experts
from promoe.inference import load_trained
from promoe.model.backbone import load_backbone
from promoe.model.build import build_model
from promoe.model.moe_model import MoEModel
from promoe.model.task_encoder import HashingEncoder
from promoe.training.trainer import save_trainable

D_TASK, D_FF, K = 16, 64, 2
TEXTS = ["Is the sky blue?", "Translate: good morning to you all", "ok"]


pytestmark = pytest.mark.usefixtures("tiny_tensors")


def model_cfg(**kw) -> ModelConfig:
    """Tiny llama, top 2 of its 4 FFNs as MoE layers of 4 experts, top-2, promoe in task mode."""
    base = dict(backbone="tiny-llama", n_moe_layers=2, n_experts=4, top_k=K, d_task=D_TASK, d_hyper=32,
                d_layer=8, hyper_rank=4, proactive_mode="task", task_encoder="hashing")
    return ModelConfig(**{**base, **kw})


def routed(model: MoEModel) -> MoEModel:
    """Give the hypernetwork non-zero output (its last layer starts at zero) so tasks route differently."""
    if model.hyper is not None:
        with torch.no_grad():
            model.hyper.out.weight.normal_(std=0.3)
            model.hyper.out.bias.normal_(std=0.3)
    return model


def build(kind: str = "promoe", **kw) -> tuple[MoEModel, object]:
    cfg = model_cfg(**kw)
    bb = load_backbone(cfg)
    return routed(build_model(bb.model, bb.family, cfg, kind).eval()), bb.tokenizer


def batch(tokenizer) -> dict[str, Tensor]:
    """Left-padded prompts of different lengths."""
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)
    assert not bool(enc["attention_mask"].all())
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def router_params(model: MoEModel) -> int:
    return sum(p.numel() for layer in model.moe_layers for p in layer.router.parameters())


def export_matching_logits(model: MoEModel, tok, out: Path) -> tuple[dict, nn.Module, dict[str, Tensor], Tensor]:
    """Export ``model`` for a random task into ``out`` and check that the plain model's logits on left-padded
    prompts equal the MoE's; returns the manifest, the plain model, the prompts and the task embedding."""
    emb = torch.randn(1, D_TASK)
    manifest = export_model(model, emb, out, tokenizer=tok, definition="d")
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    x = batch(tok)
    with torch.no_grad():
        want = model(**x, task_emb=emb.expand(len(TEXTS), -1)).logits
        got = plain(**x).logits
    keep = x["attention_mask"].bool()
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-5, atol=1e-5)
    return manifest, plain, x, emb


def test_export_of_residual_experts_keeps_the_shared_expert(tmp_path: Path) -> None:
    model, tok = build("promoe", shared_expert=True, expert_width=D_FF // 4)
    with torch.no_grad():
        for layer in model.moe_layers:
            layer.experts.w_out.normal_(std=0.05)  # residuals that add something (they start at zero)
    _, plain, _, _ = export_matching_logits(model, tok, tmp_path / "out")
    assert plain.config.intermediate_size == D_FF + K * D_FF // 4  # the shared FFN beside the chosen residuals


@pytest.mark.parametrize(("kind", "expert_width", "padded"), [
    ("promoe", None, True),  # full copies: merged FFN 2*d_ff, the lower FFNs are zero-padded
    ("promoe", D_FF // K, False),  # carved experts merge back to the pretrained width
    ("dense", D_FF // K, False),  # always-on expert: a task-level router, the same path
])
def test_export_equals_the_moe_model_for_its_task(tmp_path: Path, kind: str, expert_width: int | None,
                                                  padded: bool) -> None:
    model, tok = build(kind, expert_width=expert_width)
    manifest, plain, x, emb = export_matching_logits(model, tok, tmp_path / "out")
    assert type(plain).__name__ == "LlamaForCausalLM" and plain.dtype == torch.float32
    gen = dict(max_new_tokens=6, do_sample=False)
    want_ids = model.generate(**x, task_emb=emb.expand(len(TEXTS), -1), **gen)
    assert torch.equal(plain.generate(**x, **gen), want_ids)

    assert manifest["padding"]["used"] is padded
    width = plain.config.intermediate_size
    assert width == (K * D_FF if padded else D_FF)  # carved: the backbone's own intermediate_size
    assert manifest["intermediate_size"] == width
    assert manifest["padding"]["padded_layers"] == ([0, 1] if padded else [])
    choices = task_experts(model, emb)
    assert [row["experts"] for row in manifest["layers"]] == [c.indices.tolist() for c in choices]
    assert [row["layer"] for row in manifest["layers"]] == model.slots
    p = manifest["params"]
    assert p["exported_total"] == sum(q.numel() for q in plain.parameters())
    if kind == "promoe":  # dense has no unchosen experts (and no hypernetwork): its export is all of it
        assert p["exported_total"] < p["moe_total"] and p["ratio"] < 1
    # the export holds exactly the activated parameters (no routers), plus the stored padding zeros
    wasted = manifest["padding"]["wasted_params"]
    assert p["exported_total"] - wasted == p["moe_activated"] - router_params(model)
    assert (wasted > 0) is padded
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", MANIFEST} <= \
        {f.name for f in (tmp_path / "out").iterdir()}


def test_expert_biases_are_exported_or_refused(tmp_path: Path) -> None:
    """A llama with ``mlp_bias``: biases merge into the MLP (padded lower layers get zero biases); a
    config that cannot hold MLP biases is refused."""
    cfg = model_cfg()
    bb = load_backbone(cfg)
    bb.model.config.mlp_bias = True
    torch.manual_seed(1)
    backbone = type(bb.model)(bb.model.config).eval()
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if name.endswith("_proj.bias"):
                p.normal_(std=0.1)
    model = routed(build_model(backbone, "llama", cfg, "promoe").eval())
    assert model.moe_layers[0].experts.b_in is not None
    emb = torch.randn(1, D_TASK)
    export_model(model, emb, tmp_path / "out")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    x = batch(bb.tokenizer)
    with torch.no_grad():
        want = model(**x, task_emb=emb.expand(len(TEXTS), -1)).logits
        got = plain(**x).logits
    keep = x["attention_mask"].bool()
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-5, atol=1e-5)
    model.backbone.config.mlp_bias = False  # as for a family whose MLP has no bias option
    with pytest.raises(PromoeError, match="experts have biases"):
        export_model(model, emb, tmp_path / "other")


def test_padding_is_logged_with_the_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, _ = build()
    with caplog.at_level("WARNING", logger="promoe.export"):
        export_model(model, torch.randn(1, D_TASK), tmp_path / "out")
    assert f"model.expert_width={D_FF // K}" in caplog.text and "zero-padded" in caplog.text


def test_export_routing_is_the_models_routing_and_depends_on_the_task() -> None:
    model, tok = build()
    embs = torch.randn(6, D_TASK)
    x = batch(tok)
    seen = set()
    for emb in embs:
        choices = task_experts(model, emb[None])
        out = model(**x, task_emb=emb[None].expand(len(TEXTS), -1))
        for c, info in zip(choices, out.routing, strict=True):
            assert torch.equal(info.router.indices[:, 0], c.indices.expand(len(TEXTS), -1))
            torch.testing.assert_close(info.router.weights[:, 0], c.weights.expand(len(TEXTS), -1))
            assert abs(float(c.weights.sum()) - 1) < 1e-6
        seen.add(tuple(tuple(c.indices.tolist()) for c in choices))
    assert len(seen) > 1  # different tasks, different sub-networks


def test_exported_folder_needs_no_promoe_code(tmp_path: Path) -> None:
    model, tok = build(expert_width=D_FF // K)
    emb = torch.randn(1, D_TASK)
    export_model(model, emb, tmp_path / "out", tokenizer=tok)
    script = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
text = tok.apply_chat_template([{"role": "user", "content": "Is it raining?"}], add_generation_prompt=True,
                               tokenize=False)
ids = tok(text, return_tensors="pt")
out = model.generate(**ids, max_new_tokens=4, do_sample=False)
assert not any(m == "promoe" or m.startswith("promoe.") for m in sys.modules)
print(json.dumps({"text": text, "ids": out[0].tolist()}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert "<|im_start|>user" in got["text"]  # the chat template came along with the tokenizer
    ids = tok(got["text"], return_tensors="pt")
    want = model.generate(**ids, task_emb=emb, max_new_tokens=4, do_sample=False)
    assert got["ids"] == want[0].tolist()


@pytest.mark.parametrize(("kind", "kw", "match"), [
    ("moe", {}, r"TokenRouter routes every token.*proactive_mode: task"),
    ("promoe", {"proactive_mode": "prior"}, r"proactive_mode 'prior'.*`model.proactive_mode: task`"),
    ("promoe", {"backbone": "tiny-t5"}, r"decoder-only llama-family.*'t5' is not supported"),
])
def test_models_without_one_ffn_per_task_are_refused(tmp_path: Path, kind: str, kw: dict, match: str) -> None:
    model, _ = build(kind, **kw)
    with pytest.raises(PromoeError, match=match):
        export_model(model, torch.randn(1, D_TASK), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_folder_is_never_silently_overwritten(tmp_path: Path) -> None:
    model, _ = build(expert_width=D_FF // K)
    emb = torch.randn(1, D_TASK)
    other = tmp_path / "results"
    other.mkdir()
    (other / "keep.txt").write_text("earlier results")
    for overwrite in (False, True):  # overwrite replaces earlier exports only
        with pytest.raises(PromoeError, match="not empty"):
            export_model(model, emb, other, overwrite=overwrite)
    assert (other / "keep.txt").read_text() == "earlier results"
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    first = export_model(model, emb, out)
    with pytest.raises(PromoeError, match=r"not empty.*--overwrite"):
        check_out_dir(out)
    second = export_model(model, torch.randn(1, D_TASK), out, overwrite=True)
    assert json.loads((out / MANIFEST).read_text()) == second and first["params"] == second["params"]
    with pytest.raises(PromoeError, match="task embedding has 3 dimensions"):
        export_model(model, torch.randn(1, 3), tmp_path / "new")


def fake_run(root: Path) -> tuple[Path, MoEModel]:
    """A run folder with what ``load_trained`` reads: config.yaml and train/promoe/best.safetensors."""
    cfg = ExperimentConfig(model=model_cfg(expert_width=D_FF // K))
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    bb = load_backbone(cfg.model, seed=cfg.seed)
    model = routed(build_model(bb.model, bb.family, cfg.model, "promoe", seed=cfg.seed))
    save_trainable(model, root / "train/promoe/best.safetensors")
    return root, model


def test_cli_exports_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, _ = fake_run(tmp_path / "run")
    out = tmp_path / "export"
    definition = "Answer the question with yes or no."
    assert main(["export", "--run", str(run), "--model", "promoe", "--definition", definition,
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert f"to {out}" in text and f"{manifest['params']['exported_total']:,} exported" in text
    assert text.count("layer ") == 2
    assert manifest["definition"] == definition and manifest["source"]["model"] == "promoe"
    assert manifest["source"]["run"] == str(run.resolve())
    assert "{input}" in manifest["source"]["prompt_template"]

    trained = load_trained(run, "promoe")
    emb = HashingEncoder(D_TASK).encode([definition])
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    x = batch(trained.tokenizer)
    with torch.no_grad():
        want = trained.model(**x, task_emb=emb.expand(len(TEXTS), -1)).logits
        got = plain(**x).logits
    keep = x["attention_mask"].bool()
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-5, atol=1e-5)

    args = ["export", "--run", str(run), "--model", "promoe", "--definition", "d", "--out", str(out)]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    again = export_task_model(run, "promoe", "Another task entirely.", out, overwrite=True)
    assert again["definition"] == "Another task entirely."
