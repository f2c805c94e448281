"""``fewshot-eval run``: a full run through main() (model seam replaced by the fake), one-line errors for bad
input with a non-zero exit code, and --resume."""

import json

import pytest

from fewshot_eval import cli


@pytest.fixture
def fake_loader(monkeypatch, make_fake):
    made = []

    def load(model_dir, device=None):
        made.append(make_fake())
        return made[-1]

    monkeypatch.setattr(cli, "load_model", load)
    monkeypatch.setattr(cli, "load_token_counter", lambda model_dir: None)  # the fake has no context to check
    return made


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_run_writes_results(coco_dir, tmp_path, fake_loader, capsys):
    (tmp_path / "model").mkdir()
    rc = cli.main(["run", "--model", str(tmp_path / "model"), "--task", "caption", "--data", str(coco_dir),
                   "--shots", "0", "2", "--selection", "random", "rices", "--trials", "2", "--limit", "4",
                   "--out", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    assert rc == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert {(r["selection"], r["shots"]) for r in results} == {("random", 0), ("random", 2), ("rices", 0), ("rices", 2)}
    assert all(r["n"] == 4 for r in results)
    assert f"| caption | {coco_dir.name} | CIDEr | rices |" in capsys.readouterr().out
    # --resume: everything is already predicted, so the model generates nothing
    assert cli.main(["run", "--model", str(tmp_path / "model"), "--task", "caption", "--data", str(coco_dir),
                     "--shots", "0", "2", "--selection", "random", "rices", "--trials", "2", "--limit", "4",
                     "--out", str(tmp_path / "out"), "--resume", "--no-progress"]) == 0  # fmt: skip
    assert fake_loader[-1].generate_calls == []


@pytest.mark.parametrize(
    "args,needle",
    [(["--task", "caption", "--data", "{vqa}"], "VQA questions"),
     (["--task", "vqa", "--data", "{coco}/dataset_coco.json"], "train_questions.json"),
     (["--task", "caption", "--data", "{coco}", "--shots", "64"], "64 shots"),
     (["--task", "caption", "--data", "{tmp}/nowhere"], "nowhere"),
     (["--task", "caption", "--data", "{coco}", "--limit", "0"], "--limit")],
)  # fmt: skip
def test_bad_input_is_one_line(args, needle, coco_dir, vqa_dir, tmp_path, fake_loader, capsys):
    (tmp_path / "model").mkdir()
    args = [a.format(vqa=vqa_dir, coco=coco_dir, tmp=tmp_path) for a in args]
    assert cli.main(["run", "--model", str(tmp_path / "model"), *args, "--out", str(tmp_path / "o")]) == 2
    assert needle in _err_line(capsys)
    assert fake_loader == []  # failed before the model was loaded


def test_ensemble_flag_is_ignored_for_open_ended_tasks(coco_dir, tmp_path, fake_loader, capsys):
    (tmp_path / "model").mkdir()
    rc = cli.main(["run", "--model", str(tmp_path / "model"), "--task", "caption", "--data", str(coco_dir),
                   "--shots", "2", "--ensemble", "6", "--trials", "1", "--limit", "2", "--out", str(tmp_path / "o"),
                   "--no-progress"])  # fmt: skip
    assert rc == 0 and "applies to 'classify' only" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["results"][0]["ensembling"] == 1


def test_unknown_model_folder(coco_dir, tmp_path, capsys):
    assert cli.main(["run", "--model", str(tmp_path / "missing"), "--task", "caption", "--data", str(coco_dir)]) == 2
    assert "missing" in _err_line(capsys)
    (tmp_path / "empty").mkdir()
    assert cli.main(["run", "--model", str(tmp_path / "empty"), "--task", "caption", "--data", str(coco_dir),
                     "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "not a Flamingo model folder" in _err_line(capsys)


def test_every_flag_has_help():
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    flags = [a for a in run._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 15 and all(a.help for a in flags)
