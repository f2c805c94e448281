"""The trainer skeleton both stages run (contrastive_encoder.shared.training) and the one checkpoint layout
(contrastive_encoder.shared.checkpoint)."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive_encoder.shared.checkpoint import (
    optimizer_from_files,
    optimizer_to_files,
    read_training_state,
    restore_rng,
    rng_states,
    write_training_state,
)
from contrastive_encoder.shared.nonfinite import NonFiniteLossError
from contrastive_encoder.shared.training import LoopSettings, StepLog, TimeBudget, resolve_precision, run_loop


class Events:
    def __init__(self, bad_step: int | None = None):
        self.events, self.bad_step = [], bad_step

    def step(self, i: int) -> StepLog:
        self.events.append(("step", i))
        loss = math.nan if i == self.bad_step else 1.0 / (i + 1)
        return StepLog(loss=loss, grad_norm=1.0, finite=math.isfinite(loss))

    def save(self, n: int) -> None:
        self.events.append(("save", n))

    def evaluate(self, n: int) -> None:
        self.events.append(("eval", n))

    def log(self, n: int, record: dict) -> None:
        self.events.append(("log", n))

    def kinds(self, kind: str) -> list[int]:
        return [n for k, n in self.events if k == kind]


def _run(events: Events, start: int = 0, budget: TimeBudget | None = None, **settings):
    cfg = LoopSettings(**{"max_steps": 7, "save_every": 2, "eval_every": 3, "log_every": 5, "progress": False,
                          **settings})
    return run_loop(cfg, start, step=events.step, save=events.save, log=events.log, evaluate=events.evaluate,
                    budget=budget)


def test_the_loop_steps_saves_evaluates_and_logs_in_order():
    ev = Events()
    end = _run(ev)
    assert (end.step, end.stopped) == (7, "max_steps")
    assert ev.kinds("step") == list(range(7))
    assert ev.kinds("save") == [2, 4, 6, 7]  # every 2 steps, and the last step once
    assert ev.kinds("eval") == [3, 6]  # not at the last step: the caller evaluates after the loop
    assert ev.kinds("log") == [5, 7]
    # an evaluation comes after the save of the same step, so a crash in it loses no training
    assert ev.events.index(("save", 6)) < ev.events.index(("eval", 6))


def test_a_resumed_loop_starts_at_its_step_and_an_exact_end_saves_once():
    ev = Events()
    end = _run(ev, start=4, max_steps=6)
    assert ev.kinds("step") == [4, 5] and ev.kinds("save") == [6] and end.step == 6
    ev = Events()
    _run(ev, start=6, max_steps=6)  # nothing left to train: no step, no checkpoint
    assert ev.events == []


def test_the_time_budget_stops_before_a_step_and_the_reached_step_is_saved():
    now = {"t": 0.0}
    budget = TimeBudget(1.0, clock=lambda: now["t"])
    ev = Events()
    real_step = ev.step

    def step(i):
        now["t"] += 25.0  # 25 s a step: the budget of 60 s is spent after the third
        return real_step(i)

    ev.step = step
    end = _run(ev, budget=budget, save_every=0, eval_every=0, max_steps=100)
    assert (end.step, end.stopped) == (3, "max_minutes")
    assert ev.kinds("step") == [0, 1, 2] and ev.kinds("save") == [3]
    assert end.seconds == 75.0


def test_a_zero_budget_is_no_limit_and_a_negative_one_is_refused():
    budget = TimeBudget(0, clock=lambda: 1e9)
    budget.start()
    assert not budget.spent()
    with pytest.raises(ValueError, match="--max-minutes"):
        TimeBudget(-1)


def test_a_non_finite_step_stops_the_run_without_a_checkpoint_of_it(tmp_path):
    ev = Events(bad_step=3)
    with pytest.raises(NonFiniteLossError, match="step 4"):
        _run(ev, out=str(tmp_path))
    assert ev.kinds("step") == [0, 1, 2, 3]
    assert ev.kinds("save") == [2]  # the bad update is never saved
    assert ev.kinds("log") == [4]  # the record of the stop


def test_every_process_stops_at_the_same_step_when_one_runs_out_of_time():
    calls = []

    def agree(mine: bool) -> bool:  # what the all-reduce of another process that ran out of time would give
        calls.append(mine)
        return len(calls) > 2

    ev = Events()
    cfg = LoopSettings(max_steps=10, progress=False)
    end = run_loop(cfg, 0, step=ev.step, save=ev.save, log=ev.log, agree=agree)
    assert (end.step, end.stopped) == (2, "max_minutes") and calls == [False, False, False]


def test_precision_names():
    assert resolve_precision("fp32", cpu=False) == "no"
    assert resolve_precision("bf16", cpu=True) == "bf16"
    assert resolve_precision("auto", cpu=True) == "no"  # never bf16 on CPU, even on a machine with a GPU
    with pytest.raises(ValueError, match="--precision 'fp16'"):
        resolve_precision("fp16", cpu=False)


def _adamw_state():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "lr": 3e-3}])
    for _ in range(2):
        sum((p ** 2).sum() for p in params).backward()
        opt.step()
        opt.zero_grad()
    return opt.state_dict()


def test_optimizer_state_round_trips_through_safetensors_and_json():
    state = _adamw_state()
    back = optimizer_from_files(*optimizer_to_files(state))
    assert back["param_groups"] == state["param_groups"]
    for idx, per_param in state["state"].items():
        assert set(back["state"][idx]) == set(per_param)
        for key, value in per_param.items():
            assert torch.equal(back["state"][idx][key], value)


def test_a_written_training_state_reads_back_and_restores_the_generator(tmp_path):
    state = {"step": 5, "scheduler": {"last_epoch": 5}}
    torch.manual_seed(1)
    rng = rng_states()
    expected = torch.rand(3)
    write_training_state(tmp_path, state, _adamw_state(), rng)
    got_state, optimizer, got_rng = read_training_state(tmp_path)
    assert got_state == state and optimizer is not None and set(optimizer) == {"state", "param_groups"}
    torch.manual_seed(2)
    restore_rng(got_rng, rank=0, world=1)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(2)
    before = torch.get_rng_state()
    restore_rng(got_rng, rank=0, world=2)  # saved by 1 process, resumed by 2: each keeps its own seed
    assert torch.equal(torch.get_rng_state(), before)


def test_a_checkpoint_of_the_older_stage1_layout_still_reads(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "trainer_state.json").write_text('{"step": 3}')
    save_file({"torch": torch.get_rng_state()}, str(tmp_path / "rng.safetensors"))
    state, optimizer, rng = read_training_state(tmp_path)
    assert state == {"step": 3} and optimizer is None
    restore_rng(rng, rank=0, world=1)


def test_a_folder_that_is_no_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        read_training_state(tmp_path)
