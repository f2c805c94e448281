"""`fewshot-eval run --feature-cache`: the frozen tower's outputs kept for later runs change no prediction or
score, a later run reads every feature from the folder, and a folder of another tower or an unusable one is a
one-line error."""

import json

import pytest
import torch

fc = pytest.importorskip("flamingo_core")

from fewshot_eval import cli  # noqa: E402
from fewshot_eval.evaluate import evaluate  # noqa: E402
from fewshot_eval.model import FlamingoEvalModel  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = fc.create_model("tiny")
    with torch.no_grad():  # open the gates so that the features change the scores (they start closed, at 0)
        for block in model.xattn_layers:
            block.alpha_xattn.fill_(1.0)
            block.alpha_dense.fill_(1.0)
    return model.save_pretrained(tmp_path_factory.mktemp("flamingo") / "model")


def _run(model, task, data, out):
    """Results and every prediction record (classify's carry the log-likelihoods, which any feature moves)."""
    results = evaluate(model, task, data, shots=[1, 2], selection=["random"], trials=1, limit=4, max_new_tokens=3,
                       num_beams=1, n_bootstrap=5, out_dir=out, progress=False)  # fmt: skip
    predictions = {f.name: [json.loads(line) for line in f.read_text().splitlines()]
                   for f in sorted((out / "predictions").glob("*.jsonl"))}  # fmt: skip
    return results, predictions


@pytest.mark.parametrize("task", ["classify", "vqa"])
def test_cached_features_change_nothing_and_a_later_run_reads_them_all(model_dir, classify_dir, vqa_dir, tmp_path,
                                                                       task):  # fmt: skip
    data = {"classify": classify_dir, "vqa": vqa_dir}[task]
    plain = _run(FlamingoEvalModel(model_dir, device="cpu"), task, data, tmp_path / "plain")
    folder = tmp_path / "features"
    first = FlamingoEvalModel(model_dir, device="cpu", feature_cache=str(folder))
    assert _run(first, task, data, tmp_path / "first") == plain
    # within a run the visual-token cache already reuses an image: each distinct one is encoded once and stored
    assert first.feature_cache.misses > 0 and first.feature_cache.hits == 0
    assert len(list(folder.glob("*/*.safetensors"))) == first.feature_cache.misses
    second = FlamingoEvalModel(model_dir, device="cpu", feature_cache=str(folder))  # a new run: from disk only
    assert _run(second, task, data, tmp_path / "second") == plain
    assert (second.feature_cache.hits, second.feature_cache.misses) == (first.feature_cache.misses, 0)


def test_memory_cache_serves_repeated_pixels(model_dir, classify_dir, tmp_path):
    # without the visual-token cache every prompt's pixels reach the tower: the repeats come from the cache
    model = FlamingoEvalModel(model_dir, device="cpu", cache_visual=False, feature_cache="memory")
    _, cached = _run(model, "classify", classify_dir, tmp_path / "mem")
    _, plain = _run(FlamingoEvalModel(model_dir, device="cpu", cache_visual=False), "classify", classify_dir,
                    tmp_path / "plain")  # fmt: skip
    assert model.feature_cache.directory is None and model.feature_cache.hits > 0
    assert cached.keys() == plain.keys()
    for name in plain:  # the tower batches only the misses here, so the floats may differ in their last bits
        for a, b in zip(cached[name], plain[name], strict=True):
            assert a["ranking"] == b["ranking"] and a["scores"] == pytest.approx(b["scores"], abs=1e-4)


def _argv(model_dir, data, out, folder):
    return ["run", "--model", str(model_dir), "--task", "classify", "--data", str(data), "--shots", "1",
            "--trials", "1", "--limit", "2", "--bootstrap", "5", "--out", str(out), "--no-progress",
            "--feature-cache", str(folder)]  # fmt: skip


def test_the_cli_notes_the_hits_of_a_later_run(model_dir, classify_dir, tmp_path, capsys):
    folder = tmp_path / "features"
    assert cli.main(_argv(model_dir, classify_dir, tmp_path / "a", folder)) == 0
    first = capsys.readouterr().err.strip().splitlines()[-1]
    assert first.startswith(f"fewshot-eval: note: feature cache {folder}: 0 hits, ") and first.endswith(" misses")
    assert cli.main(_argv(model_dir, classify_dir, tmp_path / "b", folder)) == 0  # another task, shots, ablation
    misses = int(first.split(", ")[-1].split()[0])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"fewshot-eval: note: feature cache {folder}: {misses} hits, 0 misses")


def test_a_folder_of_another_tower_is_one_line(model_dir, classify_dir, tmp_path, capsys):
    folder = tmp_path / "features"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "flamingo-feature-cache", "encoder": "other@1"}))
    assert cli.main(_argv(model_dir, classify_dir, tmp_path / "o", folder)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fewshot-eval: error: feature cache ") and "\n" not in err
    assert str(folder) in err and "'other@1'" in err


def test_an_unwritable_folder_is_refused_before_the_model_loads(classify_dir, tmp_path, capsys, loads):
    (tmp_path / "model").mkdir()
    (tmp_path / "file").write_text("x")
    assert cli.main(_argv(tmp_path / "model", classify_dir, tmp_path / "o", tmp_path / "file")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fewshot-eval: error: --feature-cache {tmp_path / 'file'}: is a file, expected a folder"
    assert loads == [] and not (tmp_path / "o").exists()  # before the weights and before --out is claimed
