"""`flamingo train`'s command line is generated from TrainConfig: every default is the config's, and the two
training CLIs name each shared concept with the same flag."""

from __future__ import annotations

import dataclasses

from contrastive_encoder import cli as stage1_cli
from contrastive_encoder.shared.argtypes import OneLineParser
from flamingo_core.train import TrainConfig, build_parser, parse_args

# what both training command lines have, under one name each
SHARED_FLAGS = ["--max-steps", "--max-minutes", "--keep-checkpoints", "--num-workers", "--model", "--out", "--resume",
                "--overwrite", "--seed", "--lr", "--warmup-steps", "--weight-decay", "--grad-clip", "--precision",
                "--cpu", "--strict", "--save-every", "--log-every", "--eval-every", "--batch-size", "--strategy",
                "--data", "--no-progress"]


def _flags(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _stage1_train_parser():
    sub = OneLineParser(prog="contrastive-encoder").add_subparsers(dest="command")
    stage1_cli._train_parser(sub)
    return sub.choices["train"]


def test_train_cli_defaults_are_the_config_defaults_field_by_field():
    parsed = vars(build_parser().parse_args([]))
    default = TrainConfig()
    options = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("help")}
    assert set(parsed) == options == {f.name for f in dataclasses.fields(TrainConfig)}  # every field is a flag
    for name in options:
        assert parsed[name] == getattr(default, name), name
    assert parse_args([]) == default


def test_the_same_concept_has_the_same_flag_in_both_training_clis():
    stage1, stage2 = _flags(_stage1_train_parser()), _flags(build_parser())
    assert not [f for f in SHARED_FLAGS if f not in stage1], "stage 1 lacks these"
    assert not [f for f in SHARED_FLAGS if f not in stage2], "stage 2 lacks these"
    for old in ("--steps", "--keep", "--workers", "--preset"):  # the names before issue 17
        assert old not in stage1 | stage2


def test_max_minutes_means_the_same_in_both():
    import contrastive_encoder.train_config as s1

    for cls in (s1.TrainConfig, TrainConfig):
        help_text = cls.__dataclass_fields__["max_minutes"].metadata["help"]
        assert "0 = no limit" in help_text and "training loop" in help_text
        assert isinstance(cls().max_minutes, float) and cls().max_minutes > 0
