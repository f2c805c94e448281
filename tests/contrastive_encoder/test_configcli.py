"""Command lines generated from config dataclasses (shared/configcli.py): the rules on a small config, and
`contrastive-encoder train`, whose every default is TrainConfig's (the Python API and the CLI train the same run)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from contrastive_encoder import cli
from contrastive_encoder.shared.argtypes import OneLineParser, positive_int
from contrastive_encoder.shared.configcli import add_config_arguments, config_from_args, option
from contrastive_encoder.train import TrainConfig


@dataclass
class Small:
    max_steps: int = field(default=5, metadata=option("steps", type=positive_int))
    rate: float = field(default=0.5, metadata=option("a rate"))
    name: str | None = field(default=None, metadata=option("a name", choices=("a", "b")))
    sources: list[str] = field(default_factory=lambda: ["x"], metadata=option("repeatable", flag="--source"))
    weights: list[float] | None = field(default=None, metadata=option("several after one flag", nargs="+"))
    strict: bool = field(default=False, metadata=option("a pair --strict / --no-strict"))
    progress: bool = field(default=True, metadata=option("one negative flag", flag="--no-progress"))
    extras: dict = field(default_factory=dict)  # no help: Python only


@dataclass
class Required:
    model: str = field(metadata=option("no default: a required flag"))
    resume: str | None = field(default=None, metadata=option("bare = latest", nargs="?", const="latest"))


def test_a_field_without_default_is_required_and_const_is_a_bare_flags_value(capsys):
    assert _parse(Required, ["--model", "m"]) == Required(model="m")
    assert _parse(Required, ["--model", "m", "--resume"]) == Required(model="m", resume="latest")
    assert _parse(Required, ["--model", "m", "--resume", "step_3"]).resume == "step_3"
    with pytest.raises(SystemExit) as exit_info:
        _parse(Required, [])
    assert exit_info.value.code == 2 and "--model" in capsys.readouterr().err


def _parse(cls, argv):
    p = OneLineParser(prog="small")
    add_config_arguments(p, cls)
    return config_from_args(cls, p.parse_args(argv))


def test_the_rules_on_a_small_config(capsys):
    assert _parse(Small, []) == Small()
    cfg = _parse(Small, ["--max-steps", "7", "--rate", "2", "--name", "b", "--source", "y", "--source", "z",
                         "--weights", "1", "2", "--strict", "--no-progress"])
    assert cfg == Small(max_steps=7, rate=2.0, name="b", sources=["y", "z"], weights=[1.0, 2.0], strict=True,
                        progress=False)  # the repeated flag replaced the default list, and int/float were parsed
    assert _parse(Small, ["--strict", "--no-strict"]).strict is False
    assert Small().sources == ["x"]  # the default list was not extended in place
    for bad in (["--max-steps", "0"], ["--name", "c"], ["--extras", "{}"], ["--progress"]):
        with pytest.raises(SystemExit):
            _parse(Small, bad)
    assert "--max-steps: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_a_default_in_the_metadata_or_a_negative_flag_defaulting_to_false_is_refused():
    @dataclass
    class TwoDefaults:
        steps: int = field(default=5, metadata={"help": "steps", "default": 6})

    @dataclass
    class Negative:
        augment: bool = field(default=False, metadata=option("x", flag="--no-augment"))

    for cls in (TwoDefaults, Negative):
        with pytest.raises(TypeError, match=cls.__name__):
            add_config_arguments(argparse.ArgumentParser(), cls)


def _train_parser() -> argparse.ArgumentParser:
    sub = OneLineParser(prog="contrastive-encoder").add_subparsers(dest="command")
    cli._train_parser(sub)
    return sub.choices["train"]


def test_train_cli_defaults_are_the_config_defaults_field_by_field():
    parsed = vars(cli.parse_args(["train"]))
    assert parsed.pop("command") == "train"
    default = TrainConfig()
    options = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("help")}
    assert set(parsed) == options  # no flag of the CLI's own, so no default typed a second time
    for name in options:
        assert parsed[name] == getattr(default, name), name
    assert default.max_steps == 1800 and default.batch_size == 32 and default.num_workers == 1
    assert default.max_minutes == 10.0 and len(default.data) == 2  # what users ran: LTIP + ALIGN, 10 minutes


def test_every_train_flag_has_help():
    for action in _train_parser()._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, action.option_strings


def test_the_cli_trains_the_apis_default_run(tmp_path, monkeypatch):
    """With the world generated, `contrastive-encoder train` runs exactly TrainConfig(); without ALIGN or the
    zero-shot sets, it leaves out the default files that are not there."""
    import contrastive_encoder.train as train_module

    runs = []
    monkeypatch.setattr(train_module, "train", lambda cfg: runs.append(cfg))
    monkeypatch.chdir(tmp_path)
    default = TrainConfig()
    for path in default.data:
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_text("")
    for path in default.zero_shot:
        (tmp_path / path).mkdir(parents=True)
    assert cli.main(["train"]) == 0 and runs[-1] == default
    (tmp_path / default.data[1]).unlink()
    (tmp_path / default.zero_shot[0]).rmdir()
    assert cli.main(["train", "--max-steps", "3"]) == 0
    assert runs[-1] == dataclasses.replace(default, data=default.data[:1], zero_shot=default.zero_shot[1:], max_steps=3)
