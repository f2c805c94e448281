"""`contrastive-encoder eval` and the stage-1 data readers with hostile inputs (issue 15): a one-line error naming
the input (exit 2), or a bad row skipped and counted (named with --strict); never a traceback, a hang or a
silently wrong number."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from ce_helpers import write_class_folders, write_pairs

from contrastive_encoder import create_model
from contrastive_encoder.cli import main
from contrastive_encoder.data.pairs import PairDataset, UnreadableSourceError
from contrastive_encoder.data.sources import open_source
from contrastive_encoder.shared.records import BadSampleError, SkipCounter, read_jsonl
from contrastive_encoder.transforms import EvalTransform
from contrastive_encoder.zero_shot import load_retrieval_set

EVAL = ["eval", "--model", "tiny"]  # a preset: random weights are enough to reach every check


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def karpathy(root: Path, splits=("train", "train", "val", "test"), sentences=None) -> Path:
    """A Karpathy-split JSON over the images of ``write_pairs`` (one image per split entry)."""
    pairs = write_pairs(root, n=len(splits))
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    images = [{"filepath": str(Path(r["image"]).parent), "filename": Path(r["image"]).name, "split": s,
               "sentences": sentences[i] if sentences else [{"raw": r["text"]}, {"raw": r["text"].lower()}]}
              for i, (r, s) in enumerate(zip(rows, splits))]
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


# ------------------------------------------------------------------------------------------ retrieval splits


def test_unknown_split_is_refused_naming_the_splits_present(tmp_path, capsys):
    ds = karpathy(tmp_path / "coco")
    assert main([*EVAL, "--retrieval", str(ds), "--split", "tset"]) == 2
    err = one_line_error(capsys)
    assert str(ds) in err and "'tset'" in err and "test (1 images)" in err and "train (2 images)" in err


def test_karpathy_file_without_a_test_split_is_refused(tmp_path, capsys):
    ds = karpathy(tmp_path / "coco", splits=("train", "train", "val"))
    assert main([*EVAL, "--retrieval", str(ds)]) == 2  # --split test is the default
    err = one_line_error(capsys)
    assert str(ds) in err and "'test'" in err and "val (1 images)" in err
    data = json.loads(ds.read_text())  # a file without any split field is one evaluation set
    for im in data["images"]:
        del im["split"]
    ds.write_text(json.dumps(data))
    assert len(load_retrieval_set(ds, "test")[0]) == 3


def test_karpathy_sentences_as_strings_are_accepted_and_bad_entries_counted(tmp_path, capsys):
    sentences = [["a red circle.", "a circle"], [{"raw": "a green circle."}], [7, None], "not a list"]
    ds = karpathy(tmp_path / "coco", splits=("test",) * 4, sentences=sentences)
    skipped = SkipCounter()
    paths, caps = load_retrieval_set(ds, "test", skipped)
    assert caps == [["a red circle.", "a circle"], ["a green circle."]] and sum(skipped.values()) == 2
    out = tmp_path / "res.json"
    assert main([*EVAL, "--retrieval", str(ds), "--json", str(out)]) == 0
    res = json.loads(out.read_text())[f"retrieval:{ds}"]
    assert res["images"] == 2 and res["captions"] == 3 and res["skipped"] == 2
    assert "2 bad rows or unreadable images skipped" in capsys.readouterr().out
    assert main([*EVAL, "--retrieval", str(ds), "--strict"]) == 2
    err = one_line_error(capsys)
    assert f"{ds}: images[2]" in err and "strict" in err


# ------------------------------------------------------------------------------------- zero-shot class sets


def test_zero_shot_on_a_folder_without_class_folders_is_refused(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(write_class_folders(tmp_path / "classes").rglob("*.png"))[:3]:
        shutil.copy(p, flat / f"{p.parent.name}_{p.name}")
    assert main([*EVAL, "--zero-shot", str(flat)]) == 2
    err = one_line_error(capsys)
    assert str(flat) in err and "sub-folder of images per class" in err and "3 images directly in it" in err
    nested = tmp_path / "eval"  # the parent of train/ and val/ class-folder sets
    shutil.copytree(tmp_path / "classes", nested / "val")
    assert main([*EVAL, "--zero-shot", str(nested)]) == 2
    assert f"did you mean {nested / 'val'}" in one_line_error(capsys)


def test_zero_shot_with_one_class_is_refused(tmp_path, capsys):
    one = write_class_folders(tmp_path / "one")
    for extra in ("green", "blue"):
        shutil.rmtree(one / extra)
    assert main([*EVAL, "--zero-shot", str(one)]) == 2
    err = one_line_error(capsys)
    assert str(one) in err and "at least 2 classes" in err and "'red'" in err
    rows = [{"image": str(p), "label": "red"} for p in sorted((one / "red").glob("*.png"))]
    (tmp_path / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([*EVAL, "--zero-shot", str(tmp_path / "one.jsonl")]) == 2
    assert "at least 2 classes" in one_line_error(capsys)


# ----------------------------------------------------------------------------------- bad rows in JSON Lines


def test_non_string_image_path_is_a_bad_row(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs", n=4)
    lines = pairs.read_text().splitlines()
    lines[1] = json.dumps({"image": 123, "text": "a red circle"})
    lines[2] = json.dumps({"image": "images/train_0002.png", "text": {"en": "a caption object"}})
    pairs.write_text("\n".join(lines) + "\n")
    skipped = SkipCounter()
    assert len(open_source(pairs, skipped=skipped)) == 2 and sum(skipped.values()) == 2
    assert any("'image' is an integer, expected a string" in reason for reason in skipped)
    with pytest.raises(BadSampleError, match=f"{pairs}:2: 'image' is an integer"):
        open_source(pairs, strict=True)
    # the training CLI names the row before any work
    assert main(["train", "--model", "tiny", "--data", str(pairs), "--strict", "--max-steps", "1", "--num-workers", "0",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert f"{pairs}:2: 'image' is an integer" in one_line_error(capsys)
    # and the retrieval reader skips it too
    skipped = SkipCounter()
    paths, _ = load_retrieval_set(pairs, skipped=skipped)
    assert len(paths) == 2 and sum(skipped.values()) == 2


def test_a_non_utf8_line_is_a_bad_row_named_by_file_and_line(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs", n=4)
    lines = pairs.read_bytes().splitlines()
    lines[2] = '{"image": "images/train_0002.png", "text": "caf\u00e9"}'.encode("latin-1")
    pairs.write_bytes(b"\n".join(lines) + b"\n")
    skipped = SkipCounter()
    assert len(list(read_jsonl(pairs, skipped=skipped))) == 3
    assert len(skipped) == 1 and next(iter(skipped)).startswith("not UTF-8 text (byte ")
    with pytest.raises(BadSampleError, match=f"{pairs}:3: not UTF-8 text"):
        list(read_jsonl(pairs, strict=True))
    assert main([*EVAL, "--retrieval", str(pairs), "--strict"]) == 2
    assert f"{pairs}:3: not UTF-8" in one_line_error(capsys)


# ------------------------------------------------------------------------- a source with no readable sample


def all_bad_source(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    (root / "a.png").write_text("not a png")  # one corrupt, the others missing
    rows = [{"image": f"{c}.png", "text": f"caption {c}"} for c in "abcdefghij"[:n]]
    (root / "allbad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "allbad.jsonl"


def test_a_source_without_one_readable_sample_stops_with_the_true_count(tmp_path):
    data = all_bad_source(tmp_path / "d")
    dataset = PairDataset([open_source(data)], EvalTransform(32))
    with pytest.raises(UnreadableSourceError, match=rf"all 3 samples of {data} are unreadable \(first: .*\.png"):
        dataset[(0, 1, 0)]
    with pytest.raises(UnreadableSourceError, match="all 3 samples"):  # again: bounded, known-bad skipped
        dataset[(0, 2, 0)]
    big = all_bad_source(tmp_path / "big", n=10)
    dataset = PairDataset([open_source(big)], EvalTransform(32), max_replacements=3)
    with pytest.raises(UnreadableSourceError, match=r"4 unreadable samples in a row from index 0 \(4 of 10 bad"):
        dataset[(0, 0, 0)]


def test_training_on_an_all_bad_source_is_one_line_with_a_worker(tmp_path, capsys):
    data = all_bad_source(tmp_path / "d")
    # --num-workers 1 (the default): the error is raised in a DataLoader worker and re-raised here
    assert main(["train", "--model", "tiny", "--data", str(data), "--max-steps", "2", "--batch-size", "2", "--num-workers", "1",
                 "--no-progress", "--max-minutes", "0", "--out", str(tmp_path / "run")]) == 2
    err = one_line_error(capsys)
    assert f"all 3 samples of {data} are unreadable" in err and "worker" not in err


# ------------------------------------------------------------------------------------- broken model folders


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "good"
    create_model("tiny").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("damage,file,expected", [
    ("truncate", "model.safetensors", "not a readable safetensors file"),
    ("mismatch", "model.safetensors", "does not match"),
    ("not-json", "config.json", "not valid JSON"),
    ("wrong-config", "config.json", "not a valid DualEncoder config"),
])
def test_broken_model_folder_is_named(tmp_path, saved, capsys, damage, file, expected):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    target = broken / file
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "mismatch":
        create_model("tiny", embed_dim=8).save_pretrained(tmp_path / "other")
        shutil.copy(tmp_path / "other" / "model.safetensors", target)
    elif damage == "not-json":
        target.write_text('{"name": "tiny", ')
    else:
        cfg = json.loads(target.read_text())
        cfg["vision_nf"]["depths"] = "four"
        target.write_text(json.dumps(cfg))
    assert main(["eval", "--model", str(broken), "--zero-shot", str(write_class_folders(tmp_path / "c"))]) == 2
    err = one_line_error(capsys)
    assert str(target) in err and expected in err
