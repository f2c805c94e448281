"""Sharded checkpoints of ``flamingo train --fsdp`` (``flamingo_core.train.dcp_checkpoint``, through
``torch.distributed.checkpoint``): a resumed run equals an uninterrupted one, also with another number of
processes (2 -> 1 and 1 -> 2); a run killed while it writes a checkpoint leaves the previous one the newest and
loadable; every checkpoint holds a loadable ``Flamingo.save_pretrained`` folder of the same weights; a checkpoint
of another model is refused in one line naming it.

Tolerance: as test_fsdp2.py (trained parameters to 1e-5 after 6 AdamW steps, losses to 1e-5 relative); a resume
that restarted the AdamW moments ends 0.08 away (measured).
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
from fc_helpers import make_model
from fsdp_runs import run, step_dir
from safetensors.torch import load_file

from contrastive_encoder.shared.checkpoint import latest_checkpoint
from flamingo_core import Flamingo
from flamingo_core.train.dcp_checkpoint import _SafeReader, check_resume_layout, check_sharded_checkpoint


def _weights(run_dir, step):
    return load_file(str(step_dir(run_dir, step) / "model" / "model.safetensors"))


def _assert_same_run(a_dir, b_dir, step: int = 6):
    a, b = _weights(a_dir, step), _weights(b_dir, step)
    assert set(a) == set(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5, diff
    la = json.loads((step_dir(a_dir, step) / "state.json").read_text())
    lb = json.loads((step_dir(b_dir, step) / "state.json").read_text())
    assert la["step"] == lb["step"] == step and la["scheduler"] == lb["scheduler"]
    for k in la["losses"]:
        assert abs(la["losses"][k] - lb["losses"][k]) <= 1e-5 * abs(la["losses"][k]), k


@pytest.mark.distributed
@pytest.mark.slow
def test_killed_during_save_then_resumed_on_one_process_equals_uninterrupted(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    one, _ = run("one", base)
    two, _ = run("two", base)
    # the kill came while step 6 was written: step 3 is the newest checkpoint, the partial one never took its name
    assert latest_checkpoint(two) == step_dir(two, 3)
    leftovers = [p.name for p in (two / "checkpoints").iterdir() if not p.name.startswith("step_")]
    assert leftovers, "the killed save left no temporary folder: it was not killed during the save"
    resumed, proc = run("two_to_one", base)
    assert "saved by 2 process(es), this run has 1" in proc.stdout
    _assert_same_run(one, resumed)


@pytest.mark.distributed
@pytest.mark.slow
def test_resume_on_two_processes_equals_uninterrupted(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    one, _ = run("one", base)
    resumed, proc = run("one_to_two", base)
    assert "2 process(es)" in proc.stdout and "resumed from" in proc.stdout
    _assert_same_run(one, resumed)


@pytest.mark.distributed
@pytest.mark.slow
def test_checkpoint_model_folder_holds_the_sharded_weights(tmp_path_factory):
    one, _ = run("one", tmp_path_factory.getbasetemp())
    folder = step_dir(one, 6)
    model = Flamingo.from_pretrained(folder / "model")  # the single-file safetensors folder (save_flamingo)
    trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    loaded = {"model": {n: torch.empty_like(p) for n, p in trained.items()}}
    dcp.load(loaded, storage_reader=_SafeReader(str(folder / "distributed")), no_dist=True)  # one reader
    for n, p in trained.items():
        assert torch.equal(loaded["model"][n], p), n
    assert max(float((p - q).abs().max()) for (_, p), q in
               zip(sorted(trained.items()), (v for _, v in sorted(_weights(one, 3).items())))) > 1e-4


@pytest.mark.distributed
@pytest.mark.slow
def test_checkpoint_of_another_model_or_layout_is_refused(tmp_path_factory, tmp_path):
    one, _ = run("one", tmp_path_factory.getbasetemp())
    folder = step_dir(one, 3)
    other = make_model(xattn_ff_mult=4)
    names = [n for n, p in other.named_parameters() if p.requires_grad]
    with pytest.raises(ValueError) as e:
        check_sharded_checkpoint(folder, other, names)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and str(folder) in msg and "xattn_layers.0.ffw.1.weight is (128, 64), the model's (256, 64)" in msg
    check_sharded_checkpoint(folder, make_model(), [n for n, p in make_model().named_parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="a sharded checkpoint of an --fsdp run; resume it with --fsdp"):
        check_resume_layout(folder, fsdp=False)


def test_metadata_reader_refuses_foreign_globals(tmp_path):
    """DCP's .metadata is a pickle: one naming anything but DCP's metadata classes is refused, not run."""
    (tmp_path / "distributed").mkdir()
    (tmp_path / "distributed" / ".metadata").write_bytes(pickle.dumps(print))  # builtins.print: a callable
    with pytest.raises(ValueError, match=r"not a readable sharded checkpoint \(UnpicklingError: builtins\.print"):
        check_sharded_checkpoint(tmp_path, make_model(), [])
