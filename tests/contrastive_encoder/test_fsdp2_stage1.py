"""FSDP2 for stage 1 (``contrastive_encoder.fsdp``, ``contrastive-encoder train --fsdp``): 2 CPU processes
(torchrun, gloo) sharding the dual encoder equal 1 unsharded process with the same global batch; a run resumed
from the 2-process run's sharded checkpoint on 1 process, and a 1-process FSDP run cut and resumed (AdamW
moments through the checkpoint), equal the uninterrupted runs; every part is sharded; what FSDP cannot wrap, and
a checkpoint of the other layout, are refused in one line.

The runs train ``tiny`` with its text encoder frozen (so the caption cache runs, a collective under FSDP),
Adaptive Gradient Clipping and the global clip active at every step, and zero-shot evaluation every 2 steps
(every process evaluates under FSDP). The 2-process run uses plain SGD, whose update is the gradient itself: the
replicated temperature's gradient, which FSDP leaves to be averaged, would show there (AdamW's update does not
see a gradient's scale) with ``--local-loss`` (each process's loss is its share, so its temperature gradient
is too). Tolerance: after 4 steps the weights agree to 1e-5 (measured: SGD 2 processes and 2 -> 1 resumed 3.0e-8,
AdamW cut and resumed 1.2e-7; restarting the AdamW moments at the resume fails it), while training moved them by
more than 1e-3. AGC's 1-D norms (reduced over the shards) move the weights too little to show there (biases
clipped to ~1e-6 steps); the clipping itself is checked against timm's AGC on whole tensors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ce_helpers import write_class_folders, write_pairs
from safetensors.torch import load_file

from contrastive_encoder import create_model
from contrastive_encoder.cli import main
from contrastive_encoder.fsdp import adaptive_clip_grad_sharded, fsdp_groups, shard_dual_encoder
from contrastive_encoder.model import DualEncoder
from contrastive_encoder.shared.sharded_checkpoint import SafeReader

STEPS = 4
_RUNS: dict[str, tuple[Path, str]] = {}


def _args(base: Path) -> list[str]:
    data = base / "fsdp-data"
    if not data.exists():
        write_pairs(data / "pairs")
        write_class_folders(data / "classes")
    return ["train", "--model", "tiny", "--num-workers", "0", "--no-progress", "--log-every", "1",
            "--data", str(data / "pairs" / "train.jsonl"), "--batch-size", "8", "--max-steps", str(STEPS),
            "--save-every", "2", "--keep-checkpoints", "0", "--warmup-steps", "1", "--schedule", "constant",
            "--agc", "0.01", "--lock-text", "--zero-shot", str(data / "classes"), "--eval-every", "2"]


SGD, ADAMW = ["--optimizer", "sgd", "--lr", "0.1", "--local-loss"], ["--optimizer", "adamw", "--lr", "1e-3"]


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def run(name: str, base: Path) -> tuple[Path, str]:
    """The run ``name``, once per session: its folder and output. SGD: ``one`` (1 process, no FSDP), ``two``
    (2 processes, --fsdp), ``resumed`` (1 process, --fsdp, from ``two``'s step 2); AdamW: ``adamw`` (1 process,
    no FSDP), ``adamw_cut`` (1 process, --fsdp, stopped after 2 steps and resumed)."""
    if name in _RUNS:
        return _RUNS[name]
    out, text = base / f"s1-{name}", ""
    if name == "two":
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "contrastive_encoder.cli", *_args(base), *SGD, "--fsdp", "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        text = proc.stdout
    elif name == "adamw_cut":
        args = [*_args(base), *ADAMW, "--fsdp", "--out", str(out)]
        assert main([*args, "--stop-after", "2"]) == 0
        assert main([*args, "--resume", "latest"]) == 0
    else:
        extra = {"one": SGD, "adamw": ADAMW,
                 "resumed": [*SGD, "--fsdp", "--resume", str(step_dir(run("two", base)[0], 2))]}[name]
        assert main([*_args(base), *extra, "--out", str(out)]) == 0
    _RUNS[name] = (out, text)
    return _RUNS[name]


def _weights(run_dir: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    return load_file(str(step_dir(run_dir, step) / "model" / "model.safetensors"))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    torch.manual_seed(0)  # what train() does before building the model
    init = create_model("tiny").state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in a)
    assert diff < 1e-5 and moved > 1e-3, (diff, moved)


@pytest.mark.distributed
def test_two_process_fsdp2_equals_one_process(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    (one, _), (two, stdout) = run("one", base), run("two", base)
    _assert_same(_weights(one), _weights(two))
    s1, s2 = (json.loads((r / "summary.json").read_text()) for r in (one, two))
    assert s2["processes"] == 2 and s1["zero_shot"] == s2["zero_shot"] and s2["zero_shot"]["classes"]["n"] == 6
    assert abs(s1["last_loss"] - s2["last_loss"]) <= 1e-5 * abs(s1["last_loss"])
    # each process holds about half of the values, the frozen text encoder's included
    held = [int(n.replace(",", "")) for n in re.findall(r"FSDP2: process \d holds ([\d,]+) of the", stdout)]
    total = sum(p.numel() for p in create_model("tiny").parameters())
    assert len(held) == 2 and sum(held) >= total and max(held) <= 0.55 * total, (held, total)
    # the sharded checkpoint: one shard file per process, a trained matrix in two row blocks, no frozen weight
    folder = step_dir(two, STEPS)
    assert sorted(f.name for f in (folder / "distributed").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    meta = SafeReader(str(folder / "distributed")).read_metadata().state_dict_metadata
    rows = meta["model.vision.trunk.final_conv.weight"].chunks
    assert sorted(c.offsets[0] for c in rows) == [0, 16]  # 32 output channels, 16 a process
    assert not any(k.startswith("model.text.encoder.") for k in meta)  # frozen: rebuilt, not saved
    assert load_file(str(folder / "rng.safetensors"))["cpu"].shape[0] == 2
    # model/ is the whole DualEncoder, the frozen tower included: it loads on its own
    model = DualEncoder.from_pretrained(folder / "model")
    assert model.state_dict().keys() == _weights(two).keys()


@pytest.mark.distributed
def test_resume_from_a_sharded_checkpoint_on_one_process_equals_uninterrupted(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    (one, _), (two, _), (resumed, _) = run("one", base), run("two", base), run("resumed", base)
    _assert_same(_weights(one), _weights(resumed))
    start, end = _weights(two, 2), _weights(resumed)
    assert max(float((start[k] - end[k]).abs().max()) for k in end) > 1e-4  # it trained from step 2 on
    assert json.loads((resumed / "summary.json").read_text())["processes"] == 1


def test_fsdp2_adamw_cut_and_resumed_equals_one_unsharded_run(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    (plain, _), (cut, _) = run("adamw", base), run("adamw_cut", base)
    _assert_same(_weights(plain), _weights(cut))
    assert (step_dir(cut, 2) / "distributed" / ".metadata").is_file()


@pytest.mark.distributed
def test_a_checkpoint_of_the_other_layout_is_refused_in_one_line(tmp_path_factory, tmp_path, capsys):
    base = tmp_path_factory.getbasetemp()
    (one, _), (two, _) = run("one", base), run("two", base)
    for ckpt, flags, expected in ((step_dir(two, 2), [], "a sharded checkpoint of an --fsdp run; resume it with "
                                   "--fsdp"), (step_dir(one, 2), ["--fsdp"], "not a sharded checkpoint")):
        code = main([*_args(base), *SGD, *flags, "--resume", str(ckpt), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err and str(ckpt) in err, err


def test_fsdp_groups_cover_every_part():
    model = create_model("tiny")
    groups = fsdp_groups(model)
    names = [name for name, _ in groups]
    assert names == [*(f"vision stage {i}" for i in range(4)), "vision trunk (stem, final conv)",
                     "text layer 0", "text layer 1", "text encoder (embeddings)", "root (projections)"]
    inner = {id(p) for _, m in groups[:-1] for p in m.parameters()}
    root_own = sorted(n for n, p in model.named_parameters() if id(p) not in inner)
    assert root_own == ["logit_scale", "text.proj.weight", "vision.proj.weight"]


def test_fsdp_refuses_models_it_cannot_wrap():
    with pytest.raises(ValueError, match=r"^--fsdp: cannot shard a Linear: expected a DualEncoder \(it has no "
                                         r"vision, text, logit_scale\)$"):
        shard_dual_encoder(torch.nn.Linear(2, 2), torch.device("cpu"))
    model = create_model("tiny")
    model.vision.proj.half()
    with pytest.raises(ValueError, match=r"cannot shard root \(projections\): its trained parameters mix float16 "
                                         r"and float32"):
        shard_dual_encoder(model, torch.device("cpu"))


def test_fsdp_with_a_trunk_it_cannot_wrap_is_one_line_exit_2(tmp_path_factory, tmp_path, capsys):
    preset = json.loads((Path(create_model.__code__.co_filename).parent / "presets" / "tiny.json").read_text())
    preset.pop("vision_nf")
    config = tmp_path / "resnet.json"
    config.write_text(json.dumps(dict(preset, name="resnet", vision_arch="resnet18")))
    code = main([*_args(tmp_path_factory.getbasetemp()), "--model", str(config), "--fsdp", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot shard the vision tower's ResNet: expected an NFNet trunk" in err, err


def test_sharded_agc_equals_timm_agc_on_whole_tensors():
    from timm.utils import adaptive_clip_grad

    g = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 3, 3), (6, 5), (7,), (3, 1, 1, 1)]
    mine = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    for p, q in zip(mine, ref):
        p.grad = torch.randn(p.shape, generator=g) * torch.logspace(-4, 0, p.shape[0]).view(-1, *[1] * (p.ndim - 1))
        q.grad = p.grad.clone()
    before = [p.grad.clone() for p in mine]
    adaptive_clip_grad_sharded(mine, clip_factor=0.01)
    adaptive_clip_grad(ref, clip_factor=0.01)
    for p, q, b in zip(mine, ref, before):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
        assert not torch.equal(p.grad, b)  # the large units were clipped (the small ones kept)
