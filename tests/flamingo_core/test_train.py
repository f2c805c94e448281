"""The trainer: optimizer groups and schedule, exact resume, the round-robin dataset strategy (its turns in
the metrics, resume mid-cycle after a time-budget stop), NaN stop keeping the last good checkpoint, corrupt media
through a run, and the `flamingo train` command line."""

from __future__ import annotations

import argparse
import json
import shutil
import time
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_data_world import make_world

import flamingo_core as fc
from contrastive_encoder.shared.checkpoint import read_training_state
from contrastive_encoder.shared.nonfinite import NonFiniteLossError
from flamingo_core.train import (
    TrainConfig,
    build_parser,
    main,
    param_groups,
    parse_args,
    train,
    warmup_constant,
)

FAST = "m3w=0,ltip=1,align=0.2,vtp=0"  # pairs only: the quickest steps on 2 cores


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


def _cfg(world: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(world), out=str(out), model="tiny", vision_encoder=None, weights=FAST, batch_size=2,
                lr=1e-3, warmup_steps=2, max_steps=4, save_every=2, final_eval=False, progress=False, cpu=True)
    base.update(kw)
    return TrainConfig(**base)


def _ckpt(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:08d}"


def test_weight_decay_only_on_cross_attention_matrices():
    model = fc.create_model("tiny")
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(n.startswith("xattn_layers.") and n.endswith("weight") for n in decayed)
    assert any(".to_q." in n for n in decayed) and any(".ffw." in n for n in decayed)
    others = {names[id(p)] for p in no_decay["params"]}
    assert any(n.startswith("perceiver.") and "to_q" in n for n in others)  # resampler matrices: no decay
    assert any("alpha_xattn" in n for n in others) and any(n.startswith("new_tokens.") for n in others)
    assert len(decayed) + len(others) == sum(p.requires_grad for p in model.parameters())


def test_gate_lr_mult_puts_the_tanh_gates_in_their_own_faster_group():
    model = fc.create_model("tiny")
    groups = param_groups(model, 0.1, lr=1e-3, gate_lr_mult=10.0)
    assert len(groups) == 3
    names = {id(p): n for n, p in model.named_parameters()}
    gates = {names[id(p)] for p in groups[2]["params"]}
    assert gates == {n for n in names.values() if n.endswith(("alpha_xattn", "alpha_dense"))}
    assert groups[2]["lr"] == pytest.approx(1e-2) and groups[2]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    assert len(param_groups(model, 0.1)) == 2  # multiplier 1: the paper's two groups
    with pytest.raises(ValueError, match="need the base lr"):
        param_groups(model, 0.1, gate_lr_mult=10.0)


def test_visual_token_spread_is_zero_for_identical_images_and_positive_otherwise():
    from flamingo_core.train import visual_token_spread

    model = fc.create_model("tiny").eval()
    size = model.vision_encoder.image_size
    g = torch.Generator().manual_seed(0)
    different = torch.rand(4, 1, 1, 3, size, size, generator=g)
    same = different[:1].expand(4, -1, -1, -1, -1, -1)
    assert visual_token_spread(model, same) < 1e-6
    assert visual_token_spread(model, different) > 1e-3


def test_linear_warmup_then_constant():
    f = warmup_constant(4)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_constant(0)(0) == 1.0


def test_resumed_run_equals_uninterrupted(world, tmp_path):
    straight = train(_cfg(world, tmp_path / "a"))
    assert straight.step == 4
    first = train(_cfg(world, tmp_path / "b", max_steps=2))
    assert first.step == 2 and _ckpt(tmp_path / "b", 2).is_dir()
    resumed = train(_cfg(world, tmp_path / "b", resume="latest"))
    assert resumed.step == 4
    a = load_file(str(_ckpt(tmp_path / "a", 4) / "model" / "model.safetensors"))
    b = load_file(str(_ckpt(tmp_path / "b", 4) / "model" / "model.safetensors"))
    a2 = load_file(str(_ckpt(tmp_path / "a", 2) / "model" / "model.safetensors"))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    assert any(not torch.equal(a[k], a2[k]) for k in a)  # and training did change them between steps 2 and 4
    assert resumed.losses == straight.losses
    oa = read_training_state(_ckpt(tmp_path / "a", 4))[1]
    ob = read_training_state(_ckpt(tmp_path / "b", 4))[1]
    assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])
    state = json.loads((_ckpt(tmp_path / "b", 4) / "state.json").read_text())
    assert state["step"] == 4 and state["data_position"]["ltip"] == {"epoch": 0, "offset": 8}
    # only the trained parameters are stored
    model = fc.create_model("tiny")
    assert set(a) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert (tmp_path / "a" / "model" / "config.json").is_file()


RR = "m3w=0,ltip=1,align=0.5,vtp=0"  # round-robin turns: ltip, align, ltip, ltip, align, ... (a cycle of 3)
RR_ORDER = ["ltip", "align", "ltip", "ltip", "align"]


def test_round_robin_run_records_its_turns_and_resumes_mid_cycle_after_the_time_budget(world, tmp_path,
                                                                                        monkeypatch):
    import contrastive_encoder.shared.training as training_mod
    import flamingo_core.train.step as step_mod
    from contrastive_encoder.shared.runlog import read_metrics

    rr = dict(strategy="round-robin", weights=RR, max_steps=5, save_every=0, log_every=1)
    straight = train(_cfg(world, tmp_path / "a", **rr))
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["source"] for r in records] == RR_ORDER  # which source each optimizer step trained on
    for r in records:  # the step's loss is its one source's loss, weight 1 (not 0.5 for align)
        assert [k for k in r if k.startswith("loss/")] == [f"loss/{r['source']}"]
        assert r["loss"] == r[f"loss/{r['source']}"]

    # the same run stopped by --max-minutes after 2 steps (mid-cycle; the clock jumps), then resumed
    real_step, clock, calls = step_mod.train_step, {"offset": 0.0}, []

    def step_then_run_out_of_time(*args, **kwargs):
        result = real_step(*args, **kwargs)
        calls.append(result)
        if len(calls) == 2:
            clock["offset"] = 3600.0
        return result

    monkeypatch.setattr("flamingo_core.train.loop.train_step", step_then_run_out_of_time)
    monkeypatch.setattr(training_mod, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() + clock["offset"]))
    first = train(_cfg(world, tmp_path / "b", max_minutes=30.0, **rr))
    assert (first.step, first.stopped) == (2, "max_minutes") and _ckpt(tmp_path / "b", 2).is_dir()
    monkeypatch.undo()
    state = json.loads((_ckpt(tmp_path / "b", 2) / "state.json").read_text())
    assert state["config"]["strategy"] == "round-robin"
    assert state["data_position"] == {"ltip": {"epoch": 0, "offset": 2}, "align": {"epoch": 0, "offset": 2}}
    with pytest.raises(ValueError, match="--strategy round-robin"):  # another strategy would not continue it
        train(_cfg(world, tmp_path / "b", resume="latest", **dict(rr, strategy="accumulation")))
    with pytest.raises(ValueError, match="trained with --loss-normalisation tokens, not sequences"):
        train(_cfg(world, tmp_path / "b", resume="latest", **dict(rr, loss_normalisation="sequences")))
    resumed = train(_cfg(world, tmp_path / "b", resume="latest", **rr))
    assert resumed.step == 5 and resumed.losses == straight.losses
    a = load_file(str(_ckpt(tmp_path / "a", 5) / "model" / "model.safetensors"))
    b = load_file(str(_ckpt(tmp_path / "b", 5) / "model" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    again = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [(r["step"], r["source"], r["loss"]) for r in again] == [(r["step"], r["source"], r["loss"]) for r in records]
    state = json.loads((_ckpt(tmp_path / "b", 5) / "state.json").read_text())
    # ltip gave 3 batches of 2, align 2 (an accumulation run would be at 10 for both)
    assert state["data_position"] == {"ltip": {"epoch": 0, "offset": 6}, "align": {"epoch": 0, "offset": 4}}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(world, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    forward = fc.Flamingo.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 6:  # 2 sources per step: steps 1-3 are fine, step 4 is not
            out.loss = out.loss * float("nan")  # the summed training loss token_nll reads
        return out

    monkeypatch.setattr(fc.Flamingo, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 4.*step_00000003"):
        train(_cfg(world, out, max_steps=6, save_every=1, keep_checkpoints=2))
    steps = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert steps == ["step_00000002", "step_00000003"]  # nothing written for the bad step
    weights = load_file(str(_ckpt(out, 3) / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())

    # the command line reports it in one line with exit code 3
    calls["n"] = 0
    rc = main(["--data", str(world), "--out", str(tmp_path / "cli"), "--model", "tiny", "--vision-encoder", "",
               "--weights", FAST, "--batch-size", "2", "--max-steps", "6", "--save-every", "1", "--no-eval",
               "--no-progress", "--cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and "non-finite loss at step 4" in err[-1]
    assert (tmp_path / "cli" / "checkpoints" / "step_00000003").is_dir()


def _corrupt_world(world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "world"
    shutil.copytree(world, dst)
    records = [json.loads(line) for line in (dst / "ltip" / "train.jsonl").read_text().splitlines()]
    (dst / "ltip" / records[0]["image"]).write_bytes(b"\x89PNG broken")
    records[1]["image"] = "images/missing.png"
    (dst / "ltip" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return dst


def test_corrupt_media_skipped_and_counted_in_a_run_or_strict_failure(world, tmp_path, capsys):
    bad = _corrupt_world(world, tmp_path)
    result = train(_cfg(bad, tmp_path / "run", weights="ltip=1,m3w=0,align=0,vtp=0", batch_size=4, max_steps=4,
                        save_every=0))
    assert sum(result.skipped.values()) == 2  # 16 samples read once each: the 2 bad ones counted
    rc = main(["--data", str(bad), "--out", str(tmp_path / "strict"), "--model", "tiny", "--vision-encoder", "",
               "--weights", "ltip=1,m3w=0,align=0,vtp=0", "--batch-size", "4", "--max-steps", "4", "--strict",
               "--no-eval", "--no-progress", "--cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "strict" in err[0] and ".png" in err[0]


def test_every_flag_has_help_and_defaults_suit_the_benchmark():
    parser = build_parser()
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, action.option_strings
    cfg = parse_args([])
    assert cfg.data == "data/world" and cfg.model == "smollm2" and cfg.vision_encoder == "runs/stage1/export"
    assert 1e-4 <= cfg.lr <= 1e-3 and cfg.batch_size == 4 and 0 < cfg.max_minutes <= 18
    assert cfg.resampler_lr_mult < 1 < cfg.gate_lr_mult  # see TrainConfig: the resampler collapses at full rate
    from flamingo_core.train import source_batch_sizes

    assert source_batch_sizes(cfg, ["m3w", "ltip", "align", "vtp"]) == {"m3w": 1, "ltip": 4, "align": 4, "vtp": 2}
    assert source_batch_sizes(parse_args(["--batch-sizes", "m3w=5"]), ["m3w", "ltip"]) == {"m3w": 5, "ltip": 4}
    with pytest.raises(ValueError, match="NAME=N"):
        source_batch_sizes(parse_args(["--batch-sizes", "m3w"]), ["m3w"])
    assert parse_args(["--vision-encoder", ""]).vision_encoder is None


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = main(["--data", str(tmp_path / "nowhere"), "--model", "tiny", "--vision-encoder", "", "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nowhere" in err[0]
    rc = main(["--weights", "m3w:1", "--model", "tiny", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "NAME=NUMBER" in err[0]
    rc = main(["--resume", "latest", "--data", str(tmp_path), "--weights", "m3w=0,ltip=0,align=0,vtp=0,x=1",
               "--source", "x=pairs:" + str(tmp_path / "x.jsonl"), "--model", "tiny", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1


def test_bad_strategy_is_one_line_exit_2(capsys):
    assert parse_args(["--strategy", "round-robin"]).strategy == "round-robin"
    assert parse_args([]).strategy == "accumulation"  # the paper's choice stays the default
    from flamingo_core.cli import main as flamingo

    for run in (lambda: main(["--strategy", "merge", "--model", "tiny"]),
                lambda: flamingo(["train", "--strategy", "merge"])):  # `flamingo train` forwards to train.main
        rc = run()
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "--strategy" in err[0] and "round-robin" in err[0], err


def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients(tmp_path):
    from flamingo_core.lm_adapter import enable_gradient_checkpointing, find_decoder_layers

    def grads_and_calls(checkpointed: bool):
        model = fc.create_model("tiny", seed=2)
        with torch.no_grad():
            for block in model.xattn_layers:
                block.alpha_xattn.fill_(0.5)
        if checkpointed:
            assert enable_gradient_checkpointing(model) == 2
        _, _, layers = find_decoder_layers(model.lm)
        inner = layers[0].decoder_layer if hasattr(layers[0], "decoder_layer") else layers[0]
        calls = []
        inner.register_forward_pre_hook(lambda *a: calls.append(1))  # pre: recompute may stop early
        img = Image.new("RGB", (32, 32), (200, 30, 30))
        enc = model.processor([[img, "a red thing<EOC>"], ["text first", img, "ok<EOC>"]])
        out = model.train()(**enc)
        out.logits.float().square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, n_plain = grads_and_calls(False)
    ckpt, n_ckpt = grads_and_calls(True)
    assert n_plain == 1 and n_ckpt == 2  # the layer ran again in backward
    assert set(plain) == set(ckpt) and any("xattn" in n for n in plain)
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], rtol=1e-5, atol=1e-7), n


def test_bf16_autocast_keeps_fp32_parameters(world, tmp_path):
    result = train(_cfg(world, tmp_path / "bf16", precision="bf16", max_steps=2, save_every=2))
    assert result.step == 2 and all(v == v for v in result.losses.values())
    weights = load_file(str(_ckpt(tmp_path / "bf16", 2) / "model" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())


def test_bf16_frozen_parts_train_and_the_model_reloads_in_bf16(world, tmp_path):
    """The paper's layout: frozen LM and tower in bf16, the trained parts with fp32 weights and optimizer."""
    result = train(_cfg(world, tmp_path / "frozen-bf16", frozen_dtype="bfloat16", max_steps=2, save_every=2))
    assert result.step == 2 and all(v == v for v in result.losses.values())
    step = _ckpt(tmp_path / "frozen-bf16", 2)
    assert all(v.dtype == torch.float32 for v in load_file(str(step / "model" / "model.safetensors")).values())
    model = fc.Flamingo.from_pretrained(step / "model")
    assert {p.dtype for p in model.lm.parameters()} == {torch.bfloat16}


def test_summary_of_a_resumed_run_has_no_nan_first_loss():
    """A resumed run has no evaluation before it (seen on an H100: 'held-out loss nan -> 9.1840')."""
    from flamingo_core.train.loop import _held_out_summary

    assert _held_out_summary({}, {"eval_loss": 1.5}) == "; held-out loss 1.5000"
    assert _held_out_summary({"eval_loss": 2.0}, {"eval_loss": 1.5}) == "; held-out loss 2.0000 -> 1.5000"
    assert _held_out_summary({"eval_loss": 2.0}, None) == ""


def test_a_checkpoint_in_the_older_stage2_layout_still_resumes_and_a_new_one_loads_as_a_model(world, tmp_path):
    """Before the stages shared one layout, stage 2 wrote trained.safetensors, optimizer.pt and rng.pt."""
    from safetensors.torch import save_file

    straight = train(_cfg(world, tmp_path / "a"))
    train(_cfg(world, tmp_path / "b", max_steps=2))
    ckpt = _ckpt(tmp_path / "b", 2)
    loaded = fc.Flamingo.from_pretrained(ckpt / "model")  # a checkpoint's model/ is a saved model of its own
    assert set(loaded.trainable_state_dict()) == set(load_file(str(ckpt / "model" / "model.safetensors")))
    state, optimizer, rng = read_training_state(ckpt)
    save_file(load_file(str(ckpt / "model" / "model.safetensors")), str(ckpt / "trained.safetensors"))
    torch.save(optimizer, ckpt / "optimizer.pt")
    torch.save({"cpu": rng["cpu"]}, ckpt / "rng.pt")
    for name in ("model", "optimizer.safetensors", "optimizer.json", "rng.safetensors"):
        target = ckpt / name
        __import__("shutil").rmtree(target) if target.is_dir() else target.unlink()
    resumed = train(_cfg(world, tmp_path / "b", resume="latest"))
    assert resumed.step == 4 and resumed.losses == straight.losses


def test_a_task_probe_scores_the_held_out_captions_and_a_bad_one_is_refused_before_training(world, tmp_path,
                                                                                            capsys):
    from contrastive_encoder.shared.runlog import read_metrics
    from flamingo_core.train import main

    probe = tmp_path / "probe.py"
    probe.write_text("def count(texts, records):\n"
                     "    return {'probe_texts': len(texts), 'probe_scenes': sum('scene' in r for r in records)}\n")
    result = train(_cfg(world, tmp_path / "run", max_steps=1, final_eval=True, eval_samples=3,
                        eval_probes=[f"{probe}:count"]))
    assert result.eval["final"]["probe_texts"] == 3 and result.eval["final"]["probe_scenes"] == 3
    logged = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "probe_texts" in m]
    assert [m["probe_texts"] for m in logged] == [3, 3]  # before the first step and after the last
    for spec in (f"{probe}:missing", "no_such_module_xyz:f", f"{tmp_path / 'nope.py'}:f", "colon-less"):
        assert main(["--data", str(world), "--model", "tiny", "--vision-encoder", "", "--max-steps", "1", "--weights", FAST,
                     "--eval-probe", spec, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--eval-probe" in err[0]
    assert not (tmp_path / "bad").exists()  # refused before the run folder was claimed
