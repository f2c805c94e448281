"""``fewshot-eval run`` under bad and hostile input (issue 15): each case exits 2 with one line on stderr naming
the input, or follows the documented policy (bad records skipped, counted and noted), never a traceback.

Covers: the evaluation identity (weights' content) and ``--resume`` with another model's predictions, the
``--out`` policy (previous evaluation, a file, under a file), argument ranges refused by the parser, prompts over
the LM's context refused before generating, VQA questions without annotations or answer texts, Karpathy
sentences as strings, ``<image>`` / ``<EOC>`` inside the data, ``--device cuda`` without a GPU, a
``config.json`` that is not JSON and a non-UTF-8 line.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fewshot_helpers import FakeModel

from fewshot_eval import cli
from fewshot_eval.datasets import load_karpathy
from fewshot_eval.evaluate import prepare_data
from fewshot_eval.model import model_identifier


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


class _IdModel(FakeModel):
    """The fake model under the identifier of a model folder's content, as FlamingoEvalModel has."""

    def __init__(self, model_dir):
        super().__init__()
        self.identifier = model_identifier(model_dir)


@pytest.fixture
def loads(monkeypatch):
    """Replace the model seam with ``_IdModel``; the list holds every model made."""
    made = []

    def load(model_dir, device=None):
        made.append(_IdModel(model_dir))
        return made[-1]

    monkeypatch.setattr(cli, "load_model", load)
    monkeypatch.setattr(cli, "load_token_counter", lambda model_dir: None)  # the fake has no context to check
    return made


def _model_dir(path, weights: bytes):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"format": "flamingo_core", "flamingo": {"name": "tiny"}}))
    (path / "model.safetensors").write_bytes(weights)
    return path


def _run(model, data, out, *extra, task="caption"):
    return cli.main(["run", "--model", str(model), "--task", task, "--data", str(data), "--shots", "0", "2",
                     "--trials", "1", "--limit", "4", "--out", str(out), "--no-progress", *extra])  # fmt: skip


# ---------------------------------------------------------------- item 5: evaluation identity and --resume


def test_identifier_hashes_the_weights_content(tmp_path):
    a = _model_dir(tmp_path / "a" / "model", b"\0" * 4096)
    same = _model_dir(tmp_path / "copy" / "model", b"\0" * 4096)
    retrained = _model_dir(tmp_path / "b" / "model", b"\0" * 4095 + b"\1")  # same size, same folder name
    assert model_identifier(a) == model_identifier(same)
    assert model_identifier(a) != model_identifier(retrained)


def test_resume_refuses_predictions_of_a_retrained_model(coco_dir, tmp_path, loads, capsys):
    a = _model_dir(tmp_path / "a" / "model", b"\0" * 4096)
    b = _model_dir(tmp_path / "b" / "model", b"\0" * 4095 + b"\1")
    out = tmp_path / "out"
    assert _run(a, coco_dir, out) == 0
    pred = out / "predictions" / "caption_random_2shot_ens1_trial0.rank0.jsonl"
    before = pred.read_text()
    capsys.readouterr()
    assert _run(b, coco_dir, out, "--resume") == 2
    err = _err_line(capsys)
    assert "--overwrite" in err and model_identifier(a) in err and model_identifier(b) in err
    assert pred.read_text() == before and loads[-1].generate_calls == []  # refused before any generation
    assert _run(b, coco_dir, out, "--overwrite") == 0
    assert {json.loads(x)["model"] for x in pred.read_text().splitlines()} == {model_identifier(b)}
    assert _run(b, coco_dir, out, "--resume", "latest") == 0 and loads[-1].generate_calls == []


# ---------------------------------------------------------------- --out policy


def test_rerun_into_a_previous_evaluation_needs_resume_or_overwrite(coco_dir, tmp_path, loads, capsys):
    model, out = _model_dir(tmp_path / "model", b"w"), tmp_path / "out"
    assert _run(model, coco_dir, out) == 0
    results = (out / "results.json").read_text()
    capsys.readouterr()
    assert _run(model, coco_dir, out) == 2
    err = _err_line(capsys)
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == results and len(loads) == 1  # untouched, no model loaded


def test_out_in_a_foreign_folder_needs_overwrite_and_keeps_its_files(coco_dir, tmp_path, loads, capsys):
    model, out = _model_dir(tmp_path / "model", b"w"), tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _run(model, coco_dir, out) == 2
    assert "--overwrite" in _err_line(capsys)
    assert _run(model, coco_dir, out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "results.json").is_file()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_out_that_is_a_file_is_one_line(where, coco_dir, tmp_path, loads, capsys):
    model = _model_dir(tmp_path / "model", b"w")
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    assert _run(model, coco_dir, out) == 2
    assert str(out) in _err_line(capsys) and loads == []


def test_overwrite_deletes_only_the_evaluations_own_files(coco_dir, tmp_path, loads, capsys):
    model, out = _model_dir(tmp_path / "model", b"w"), tmp_path / "eval"
    assert _run(model, coco_dir, out) == 0
    (out / "predictions" / "experiment1.csv").write_text("mine")
    assert _run(model, coco_dir, out, "--overwrite") == 0
    assert (out / "predictions" / "experiment1.csv").read_text() == "mine"


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_cache_dir_that_cannot_be_written_is_one_line_before_any_work(where, coco_dir, tmp_path, loads, capsys):
    model = _model_dir(tmp_path / "model", b"w")
    (tmp_path / "f").write_text("x")
    cache = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    assert _run(model, coco_dir, tmp_path / "out", "--cache-dir", str(cache)) == 2
    assert "--cache-dir" in _err_line(capsys) and loads == [] and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- item 8: argument ranges, in the parser


@pytest.mark.parametrize(
    "flag,value",
    [("--max-new-tokens", "0"), ("--num-beams", "0"), ("--batch-size", "0"), ("--trials", "0"),
     ("--limit", "0"), ("--shots", "-1"), ("--ensemble", "0")],
)  # fmt: skip
def test_out_of_range_arguments_are_refused_by_the_parser(flag, value, coco_dir, tmp_path, loads, capsys):
    model = _model_dir(tmp_path / "model", b"w")
    argv = ["run", "--model", str(model), "--task", "caption", "--data", str(coco_dir), "--out", str(tmp_path / "o")]
    assert cli.main([*argv, flag, value]) == 2
    err = _err_line(capsys)
    assert f"argument {flag}" in err and value in err
    assert loads == [] and not (tmp_path / "o").exists()  # before any work


# ---------------------------------------------------------------- item 8: prompts over the LM's context


class _ShortContextModel(FakeModel):
    """A fake whose context holds 0-shot prompts of the coco fixture but not 2-shot ones (a token = a char)."""

    context_length = 80

    def count_tokens(self, texts, continuation=False):
        return [len(t) for t in texts]


def test_prompt_over_the_context_is_refused_before_the_model_loads(coco_dir, tmp_path, monkeypatch, capsys):
    made = []
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: made.append(_ShortContextModel()) or made[-1])
    monkeypatch.setattr(cli, "load_token_counter", lambda model_dir: _ShortContextModel())  # tokenizer + context
    model = _model_dir(tmp_path / "model", b"w")
    assert _run(model, coco_dir, tmp_path / "out", "--max-new-tokens", "5") == 2
    err = _err_line(capsys)
    assert "caption 2-shot" in err and "context of 80 tokens" in err and "+ 5 to generate" in err
    assert "for query '" in err and "dataset_coco.json" in err
    assert made == [] and not (tmp_path / "out").exists()  # no model loaded, no run folder claimed


def test_prompt_over_the_context_is_still_refused_after_loading(coco_dir, tmp_path, monkeypatch, capsys):
    """The backstop: a model folder whose tokenizer cannot be read before loading is checked once loaded."""
    made = []
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: made.append(_ShortContextModel()) or made[-1])
    monkeypatch.setattr(cli, "load_token_counter", lambda model_dir: None)
    assert _run(_model_dir(tmp_path / "model", b"w"), coco_dir, tmp_path / "out", "--max-new-tokens", "5") == 2
    assert "caption 2-shot" in _err_line(capsys) and made[0].generate_calls == []  # not even the 0-shot prompts


def test_real_model_counts_tokens_as_its_processor_and_refuses_long_prompts(coco_dir, tmp_path, monkeypatch, capsys):
    fc = pytest.importorskip("flamingo_core")
    from fewshot_eval.model import FlamingoEvalModel, TokenCounter

    torch.manual_seed(0)
    model_dir = fc.create_model("tiny").save_pretrained(tmp_path / "model")  # LM context: 512 positions
    adapter = FlamingoEvalModel(model_dir, device="cpu")
    text = "<image>Output: a red square.<EOC><image>Output:"
    assert adapter.context_length == 512
    assert adapter.count_tokens([text]) == [adapter.processor([text.replace("<image>", "")])["input_ids"].shape[1] + 2]
    # the same counts and context from the folder alone, without building the model
    counter = TokenCounter.from_pretrained(model_dir)
    texts = [text, "<image>Question: What colour? Answer: red<EOC>", "plain"]
    assert counter.context_length == 512 and counter.count_tokens(texts) == adapter.count_tokens(texts)
    assert counter.count_tokens(texts, continuation=True) == adapter.count_tokens(texts, continuation=True)

    loaded = []
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: loaded.append(a))
    long_template = "<image>" + "A picture that shows, in some detail, the following: " * 3 + "{answer}<EOC>"
    for selection, needle in (("random", "caption 4-shot (random, trial 0): "),
                              ("rices", "caption 4-shot (rices, even its 4 demonstrations with the fewest tokens): ")):
        argv = ["run", "--model", str(model_dir), "--task", "caption", "--data", str(coco_dir), "--shots", "4",
                "--selection", selection, "--trials", "1", "--limit", "2", "--template", long_template, "--device",
                "cpu", "--no-progress", "--out", str(tmp_path / "out")]  # fmt: skip
        assert cli.main(argv) == 2
        err = _err_line(capsys)
        assert needle in err and "context of 512 tokens" in err and "+ 30 to generate" in err
    assert loaded == [] and not (tmp_path / "out").exists()  # refused before the weights were loaded


# ---------------------------------------------------------------- items 8 / 9 and tracebacks: bad records


def _vqa_copy(vqa_dir, tmp_path):
    root = tmp_path / "vqa"
    shutil.copytree(vqa_dir, root, symlinks=True)
    q = json.loads((root / "val_questions.json").read_text())
    a = json.loads((root / "val_annotations.json").read_text())
    return root, q, a


def _vqa_save(root, q, a):
    (root / "val_questions.json").write_text(json.dumps(q))
    (root / "val_annotations.json").write_text(json.dumps(a))


def test_vqa_questions_without_annotation_or_answer_text_are_skipped_and_noted(vqa_dir, tmp_path, loads, capsys):
    root, q, a = _vqa_copy(vqa_dir, tmp_path)
    q["questions"].append({"image_id": 7, "question": "Orphan?", "question_id": 999})  # no annotation
    a["annotations"][0]["answers"] = [{"text": "red"}] * 10  # answers without 'answer'
    del a["annotations"][0]["multiple_choice_answer"]
    _vqa_save(root, q, a)
    model = _model_dir(tmp_path / "model", b"w")
    assert _run(model, root, tmp_path / "out", task="vqa") == 0
    err = capsys.readouterr().err
    note = [ln for ln in err.splitlines() if "val_questions.json" in ln]
    assert len(note) == 1 and "note:" in note[0] and "skipped 2 samples" in note[0] and "Traceback" not in err
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert all(r["skipped"] == 2 for r in results)


def test_vqa_answers_of_another_shape_are_one_line(vqa_dir, tmp_path, loads, capsys):
    root, q, a = _vqa_copy(vqa_dir, tmp_path)
    for ann in a["annotations"]:
        ann["answers"] = [{"text": "red"}]
        ann.pop("multiple_choice_answer")
    _vqa_save(root, q, a)
    assert _run(_model_dir(tmp_path / "model", b"w"), root, tmp_path / "out", task="vqa") == 2
    err = _err_line(capsys)
    assert "val_annotations.json" in err and "no annotation has answer texts" in err and loads == []


def test_karpathy_sentences_given_as_strings_are_captions(coco_dir, tmp_path):
    data = json.loads((coco_dir / "dataset_coco.json").read_text())
    for img in data["images"]:
        img["sentences"] = [s["raw"] for s in img["sentences"]]
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(coco_dir / "images")
    test = load_karpathy(tmp_path, "test")
    assert len(test) == 8 and len(test.examples[0].references) == 5 and test.examples[0].target.startswith("A ")


@pytest.mark.parametrize("marker", ["<image>", "<EOC>"])
def test_prompt_markers_inside_the_data_are_skipped_and_counted(marker, coco_dir, vqa_dir, tmp_path, loads, capsys):
    data = json.loads((coco_dir / "dataset_coco.json").read_text())
    train = [img for img in data["images"] if img["split"] == "train"]
    train[0]["sentences"][0]["raw"] = f"A red {marker} square."  # a demonstration's answer
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(coco_dir / "images")
    td = prepare_data("caption", tmp_path, shots=[2])
    assert len(td.support) == 11 and all(marker not in e.target for e in td.support.examples)
    assert sum(td.support.skipped.values()) == 1
    root, q, a = _vqa_copy(vqa_dir, tmp_path / "v")
    q["questions"][0]["question"] = f"What {marker} colour?"  # a query's question
    _vqa_save(root, q, a)
    assert _run(_model_dir(tmp_path / "model", b"w"), root, tmp_path / "out", task="vqa") == 0
    err = capsys.readouterr().err
    assert f"skipped 1 samples (1 text contains the prompt marker {marker})" in err and "Traceback" not in err
    preds = (tmp_path / "out" / "predictions" / "vqa_random_0shot_ens1_trial0.rank0.jsonl").read_text()
    assert len(preds.splitlines()) == 4 and str(q["questions"][0]["question_id"]) not in [
        json.loads(x)["id"] for x in preds.splitlines()]


def test_a_non_utf8_line_is_noted_with_its_file(video_dir, tmp_path, loads, capsys):
    root = tmp_path / "qa"
    shutil.copytree(video_dir / "qa", root, symlinks=True)
    with open(root / "val.jsonl", "ab") as fh:
        fh.write(b'{"video": "videos/000000", "question": "caf\xe9?", "answers": ["red"]}\n')
    assert _run(_model_dir(tmp_path / "model", b"w"), root, tmp_path / "out", task="video-qa") in (0, 2)
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "val.jsonl" in ln)  # skipped and noted, or refused
    assert "Traceback" not in err and "UTF-8" in line


# ---------------------------------------------------------------- tracebacks: device, config.json


def test_device_cuda_without_a_gpu_is_one_line_before_any_work(coco_dir, tmp_path, loads, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = _model_dir(tmp_path / "model", b"w")
    assert _run(model, coco_dir, tmp_path / "out", "--device", "cuda") == 2
    assert "'cuda'" in _err_line(capsys) and loads == [] and not (tmp_path / "out").exists()
    assert _run(model, coco_dir, tmp_path / "out", "--device", "gpu") == 2
    assert "'gpu'" in _err_line(capsys) and loads == []


def test_config_json_that_is_not_json_names_the_file(coco_dir, tmp_path, capsys):
    model = _model_dir(tmp_path / "model", b"w")
    (model / "config.json").write_text("{not json")
    assert _run(model, coco_dir, tmp_path / "out", "--device", "cpu") == 2
    assert str(model / "config.json") in _err_line(capsys)
