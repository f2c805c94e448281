"""`fewshot-eval run`'s command line is generated from EvalConfig: every default is the config's, every flag
reaches its field and from there `evaluate`, and the concepts the training commands have use their flag names."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json

import pytest

from fewshot_eval import EvalConfig, cli, evaluate, prepare_data
from fewshot_eval.ensemble import DEFAULT_ENSEMBLE
from flamingo_core import cli as flamingo_cli
from flamingo_core.train import build_parser as train_parser

REQUIRED = ["--model", "m", "--task", "caption", "--data", "d"]


def _run_parser():
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def _flags(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_run_cli_defaults_are_the_config_defaults_field_by_field():
    parsed = vars(cli.build_parser().parse_args(["run", *REQUIRED]))
    assert parsed.pop("command") == "run"
    default = EvalConfig(model="m", task="caption", data="d")
    assert set(parsed) == {f.name for f in dataclasses.fields(EvalConfig)}  # every field is a flag, no other flag
    for name in parsed:
        assert parsed[name] == getattr(default, name), name
    assert cli.parse_args(["run", *REQUIRED]) == default
    assert default.shots == [0, 4, 8] and default.selection == ["random"] and default.out == "runs/fewshot"
    assert default.trials == 3 and default.batch_size == 8 and default.ensemble == 1 and default.progress


def test_every_flag_given_reaches_the_config():
    argv = ["run", "--model", "runs/m", "--task", "classify", "--data", "data/c", "--shots", "0", "2",
            "--zero-shot-demos", "1", "--selection", "rices", "balanced", "--trials", "2", "--nonce-labels",
            "--nonce-words", "w.txt", "--bootstrap", "50", "--ensemble", "--limit", "7", "--out", "o",
            "--resume", "--overwrite", "--split", "val", "--support-split", "train", "--image-template", "{id}.jpg",
            "--cache-dir", "c", "--feature-cache", "f", "--video-frames", "8", "--video-fps", "0",
            "--batch-size", "3", "--num-beams", "1", "--max-new-tokens", "9",
            "--template", "<image>{answer}<EOC>", "--seed", "5", "--device", "cpu", "--no-progress",
            "--vqa-scorer", "official-2017", "--caption-scorer", "python", "--protocol", "openflamingo",
            "--no-score"]  # fmt: skip
    cfg = cli.parse_args(argv)
    assert cfg == EvalConfig(
        model="runs/m", task="classify", data="data/c", shots=[0, 2], zero_shot_demos=1,
        selection=["rices", "balanced"], trials=2, nonce_labels=True, nonce_words="w.txt", bootstrap=50,
        ensemble=DEFAULT_ENSEMBLE, limit=7, out="o", resume="latest", overwrite=True, split="val",
        support_split="train", image_template="{id}.jpg", cache_dir="c", feature_cache="f", video_frames=8,
        video_fps=0.0, batch_size=3, num_beams=1,
        max_new_tokens=9, template="<image>{answer}<EOC>", seed=5, device="cpu", progress=False,
        vqa_scorer="official-2017", caption_scorer="python", protocol="openflamingo", score=False,
    )  # fmt: skip
    # every field differs from its default, so no flag was left out (the parser leaves --resume with --overwrite
    # to run(), which refuses the pair)
    assert [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) == _default(f)] == []
    assert (cfg.evaluate_kwargs()["max_frames"], cfg.evaluate_kwargs()["video_fps"]) == (8, None)  # 0: evenly spaced
    later = cli.parse_args(["run", *REQUIRED, "--ensemble", "4", "--resume", "latest"])
    assert (later.ensemble, later.resume) == (4, "latest")


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def test_what_to_evaluate_is_required_and_a_bad_value_is_one_line(capsys):
    for missing in ("--model", "--task", "--data"):
        argv = list(REQUIRED)
        del argv[argv.index(missing):argv.index(missing) + 2]
        assert cli.main(["run", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert missing in err and "required" in err and "\n" not in err
    assert cli.main(["run", *REQUIRED, "--resume", "first"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["run", *REQUIRED, "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_the_training_commands_concepts_have_their_flags():
    run, train = _flags(_run_parser()), _flags(train_parser())
    for flag in ("--model", "--data", "--out", "--resume", "--overwrite", "--seed", "--batch-size", "--progress",
                 "--no-progress"):  # fmt: skip
        assert flag in run and flag in train, flag
    # the device to run on is spelled as in `flamingo generate` (a torch device; training has the bool --cpu)
    assert flamingo_cli.parse_args(["generate", "--model", "m", "--prompt", "p", "--device", "cpu"]).device == "cpu"
    assert "--device" in run


def test_the_configs_keywords_are_the_apis():
    cfg = EvalConfig(model="m", task="classify", data="d", shots=[2], zero_shot_demos=1, selection=["balanced"],
                     trials=2, nonce_labels=True, nonce_words="w.txt", bootstrap=9, ensemble=4, limit=5, out="o",
                     resume="latest", split="val", support_split="s", image_template="{id}.jpg", cache_dir="c",
                     feature_cache="f", batch_size=3, num_beams=1, max_new_tokens=7, template="t", seed=6,
                     progress=False, vqa_scorer="official-2017", score=True)  # fmt: skip
    data = dict(split="val", support_split="s", limit=5, image_template="{id}.jpg", score=True,
                selection=["balanced"], labels="nonce", nonce_words="w.txt", zero_shot_demos=1)  # fmt: skip
    assert cfg.data_kwargs() == data
    assert cfg.evaluate_kwargs() == dict(
        trials=2, ensemble=4, out_dir="o", resume=True, batch_size=3, num_beams=1, max_new_tokens=7, template="t",
        cache_dir="c", seed=6, progress=False, n_bootstrap=9, vqa_scorer="official-2017", caption_scorer="auto",
        protocol="flamingo", max_frames=30, video_fps=3.0, **data)  # fmt: skip
    assert set(cfg.evaluate_kwargs()) <= set(inspect.signature(evaluate).parameters)
    # --feature-cache is the model's (FlamingoEvalModel, through cli.load_model), not an evaluate() keyword
    assert "feature_cache" not in cfg.evaluate_kwargs() and "feature_cache" not in cfg.data_kwargs()
    assert set(cfg.data_kwargs()) <= set(inspect.signature(prepare_data).parameters)
    assert EvalConfig(model="m", task="caption", data="d").evaluate_kwargs()["resume"] is False


def test_the_cli_evaluates_with_the_configs_values(coco_dir, tmp_path, loads, monkeypatch):
    evaluate_module = importlib.import_module("fewshot_eval.evaluate")  # the package attribute is the function

    calls = []
    real = evaluate_module.evaluate
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    (tmp_path / "model").mkdir()
    argv = ["run", "--model", str(tmp_path / "model"), "--task", "caption", "--data", str(coco_dir), "--shots", "2",
            "--trials", "1", "--limit", "2", "--batch-size", "3", "--bootstrap", "7", "--seed", "4",
            "--ensemble", "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    (_, task, _, shots), kwargs = calls[0]
    expected = dataclasses.replace(cli.parse_args(argv), ensemble=1).evaluate_kwargs()  # --ensemble: classify only
    assert task == "caption" and shots == [2] and kwargs == expected
    assert (kwargs["batch_size"], kwargs["n_bootstrap"], kwargs["seed"], kwargs["progress"]) == (3, 7, 4, False)
    results = json.loads((tmp_path / "o" / "results.json").read_text())["results"]
    assert results[0]["n"] == 2 and results[0]["n_bootstrap"] == 7 and results[0]["ensembling"] == 1


def test_run_leaves_the_callers_config_as_given(coco_dir, tmp_path, loads):
    (tmp_path / "model").mkdir()
    cfg = EvalConfig(model=str(tmp_path / "model"), task="caption", data=str(coco_dir), shots=[0], trials=1, limit=2,
                     ensemble=3, out=str(tmp_path / "o"), progress=False)  # fmt: skip
    assert cli.run(cfg)[0]["ensembling"] == 1 and cfg.ensemble == 3


@pytest.mark.parametrize("field_name", ["resume", "ensemble"])
def test_bare_flags_take_their_const(field_name):
    cfg = cli.parse_args(["run", *REQUIRED, "--" + field_name])
    assert getattr(cfg, field_name) == {"resume": "latest", "ensemble": DEFAULT_ENSEMBLE}[field_name]
