"""Tensor parallelism (``flamingo_core.train.tensor_parallel``, ``flamingo train --tensor-parallel N``) and the
2-D data x tensor mesh with FSDP2 (``train/mesh.py``): CPU processes under torchrun with gloo, tiny presets.

- split over 2 processes, Flamingo on LLaMA, GPT-NeoX and Qwen2 gives the logits, loss and every trained
  gradient of the whole model (<= 1e-5, fp32; measured <= 3e-6), and the same greedy and beam tokens;
- a ``--tensor-parallel 2`` run resuming the 1-process FSDP run's step-3 checkpoint reaches its step-6 weights
  (the sharded checkpoint read into the split layout, 3 AdamW steps on split matrices; measured 1e-6);
- a 2 x 2 mesh (4 processes: FSDP over 2 replicas, each split over 2) equals the 1-process run after 3 steps;
- what cannot be split is refused in one line naming the numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fc_helpers import make_model
from fsdp_runs import ARGS, BATCH, launch, run, step_dir
from safetensors.torch import load_file
from test_data_world import make_world

from flamingo_core.train import main
from flamingo_core.train.tensor_parallel import check_tensor_parallel, lm_parallel_plan

WORKER = Path(__file__).with_name("tp_worker.py")
TP_ARGS = [a for a in ARGS if a != "--fsdp"] + ["--tensor-parallel", "2"]


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _weights(run_dir: Path, step: int) -> dict:
    return load_file(str(step_dir(run_dir, step) / "model" / "model.safetensors"))


@pytest.mark.distributed
def test_split_model_gives_the_whole_models_logits_gradients_and_tokens(tmp_path):
    out = tmp_path / "tp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(out), "llama", "gpt_neox", "qwen2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for arch, r in results.items():
        assert r["logits"] <= 1e-5 and r["logits_scale"] > 0.1, (arch, r["logits"])
        assert r["loss"] <= 1e-5 * r["loss_value"], (arch, r["loss"])
        # every trained tensor's gradient, gathered from its shards; the smallest is far above the tolerance
        assert r["grads"] <= 1e-5 and r["grad_names"] == [], (arch, r["grads"], r["grad_names"])
        assert r["grad_rel"] <= 1e-3, (arch, r["grad_rel"])
        tokens, beams, scores = r["decode"]
        assert [tokens, beams] == r["decode_whole"][:2] and len(set(tokens[0])) > 2, arch
        assert max(abs(a - b) for a, b in zip(scores, r["decode_whole"][2])) <= 1e-4, arch
        # each process holds its half of every split matrix: [K_r; V_r] of a fused keys/values projection
        assert r["kv_local"] == [32, 32] and r["held"] < 0.65 * r["total"], (arch, r["kv_local"], r["held"])


@pytest.mark.distributed
@pytest.mark.slow
def test_tensor_parallel_training_resumes_and_equals_one_process(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    one, _ = run("one", base)
    out = base / "tp-two"
    proc = launch(2, [*TP_ARGS, "--data", str(make_world(base)), *BATCH[1], "--out", str(out),
                      "--resume", str(step_dir(one, 3))])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tensor parallel 2 (mesh data 1 x tensor 2)" in proc.stdout
    assert "tensor-parallel sharded AdamW" in proc.stdout
    init = {n: p.detach() for n, p in make_model().named_parameters() if p.requires_grad}
    assert _max_diff(_weights(out, 6), _weights(one, 6)) < 1e-5
    assert _max_diff(_weights(one, 6), _weights(one, 3)) > 1e-4 and set(_weights(one, 6)) == set(init)
    la = json.loads((step_dir(one, 6) / "state.json").read_text())["losses"]
    lb = json.loads((step_dir(out, 6) / "state.json").read_text())["losses"]
    assert all(abs(la[k] - lb[k]) <= 1e-5 * abs(la[k]) for k in la), (la, lb)


@pytest.mark.distributed
@pytest.mark.slow
def test_two_by_two_mesh_equals_one_process(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    one, _ = run("one", base)
    out = base / "mesh-2x2"
    args = [*ARGS, "--tensor-parallel", "2", "--max-steps", "3", "--data", str(make_world(base)), *BATCH[2]]
    proc = launch(4, [*args, "--out", str(out)], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FSDP2 x tensor parallel 2 (mesh data 2 x tensor 2)" in proc.stdout
    assert _max_diff(_weights(out, 3), _weights(one, 3)) < 1e-5


def test_bad_tensor_parallel_sizes_are_one_line_errors():
    model = make_model()  # LLaMA: 4 heads, 2 key/value heads; 2 cross-attention heads
    with pytest.raises(ValueError, match=r"^--tensor-parallel 2 does not divide the 3 processes of this run$"):
        check_tensor_parallel(model, 2, 3, fsdp=True)
    with pytest.raises(ValueError, match=r"--tensor-parallel 3 does not divide the LM's attention heads: 4"):
        check_tensor_parallel(model, 3, 3, fsdp=False)
    with pytest.raises(ValueError, match=r"--tensor-parallel 4 does not divide the LM's key/value heads: 2"):
        check_tensor_parallel(model, 4, 4, fsdp=False)
    wide = make_model(lm_config={**make_model().config.lm_config, "num_key_value_heads": 4})
    with pytest.raises(ValueError, match=r"does not divide the cross-attention heads \(xattn_heads\): 2"):
        check_tensor_parallel(wide, 4, 4, fsdp=False)
    with pytest.raises(ValueError, match=r"--tensor-parallel 2 with 4 processes: .* add --fsdp"):
        check_tensor_parallel(model, 2, 4, fsdp=False)
    with pytest.raises(ValueError, match=r"has no base_model_tp_plan"):
        check_tensor_parallel(make_model("gpt2"), 2, 2, fsdp=False)
    with pytest.raises(ValueError, match=r"cannot split a Linear: expected a Flamingo model"):
        check_tensor_parallel(torch.nn.Linear(2, 2), 2, 2, fsdp=False)


def test_lm_plan_reaches_through_the_cross_attention_wrappers():
    plan = lm_parallel_plan(make_model().lm)  # every layer of the tiny model is wrapped (cross_attn_every 1)
    assert plan["layers.0.decoder_layer.self_attn.q_proj"] == "colwise"
    assert plan["layers.1.decoder_layer.mlp.down_proj"] == "rowwise"
    assert len(plan) == 2 * 7


def test_cli_refuses_a_size_that_does_not_divide_the_processes(tmp_path_factory, tmp_path, capsys):
    world = make_world(tmp_path_factory.getbasetemp())
    code = main(["--cpu", "--model", "tiny", "--vision-encoder", "", "--data", str(world), "--out",
                 str(tmp_path / "run"), "--tensor-parallel", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--tensor-parallel 2 does not divide the 1 processes of this run" in err, err
