"""The runner end to end with the fake model: every task, RICES vs random, ensembling, saved predictions,
results schema, report files, and an interrupted run continued with resume."""

import json
import shutil

import pytest

from fewshot_eval.evaluate import evaluate

SCHEMA_KEYS = {"task", "labels", "split", "shots", "selection", "ensembling", "metric", "n", "trials", "mean",
               "std", "ci95", "n_bootstrap", "model", "data", "scores"}  # fmt: skip


def _by(results, **kw):
    return [r for r in results if all(r[k] == v for k, v in kw.items())]


def test_caption_random_and_rices(coco_dir, fake_model, tmp_path):
    out = tmp_path / "run"
    results = evaluate(fake_model, "caption", coco_dir, shots=[0, 2], selection=["random", "rices"], trials=2,
                       out_dir=out, batch_size=3, progress=False)  # fmt: skip
    # CIDEr, BLEU-4 and ROUGE-L for each of 2 selections x 2 shot counts
    assert len(results) == 12 and all(SCHEMA_KEYS <= set(r) for r in results)
    assert {r["metric"] for r in results} == {"CIDEr", "BLEU-4", "ROUGE-L"}
    rices2 = _by(results, selection="rices", shots=2, metric="CIDEr")[0]
    random2 = _by(results, selection="random", shots=2, metric="CIDEr")[0]
    assert rices2["trials"] == 1 and random2["trials"] == 2 and len(random2["scores"]) == 2
    assert rices2["n"] == 8 and rices2["metric"] == "CIDEr" and rices2["model"] == "fake-model-v1"
    # RICES puts a same-colour image last, and the fake copies the last caption: better than random
    assert rices2["mean"] > random2["mean"]
    # saved predictions: one line per query, cut at the stop word, with the prompt and demonstrations
    lines = (out / "predictions" / "caption_rices_2shot_ens1_trial0.rank0.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == 8 and all("Question:" not in r["prediction"] for r in recs)
    assert all(r["prompt"].count("<image>") == 3 and len(r["demos"]) == 2 for r in recs)
    assert all(r["id"] not in r["demos"] for r in recs)
    zero = json.loads((out / "predictions" / "caption_random_0shot_ens1_trial0.rank0.jsonl").read_text().splitlines()[0])
    assert zero["prompt"].count("<image>") == 1 and zero["prompt"].count("<EOC>") == 2  # text-only demos
    saved = json.loads((out / "results.json").read_text())
    assert saved["schema"] == "fewshot_eval/results/v1" and len(saved["results"]) == 12
    assert f"| caption | {coco_dir.name} | CIDEr | rices |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 1000
    # support features were cached on disk and a second run reuses them
    assert len(list((out / "cache").glob("*.npy"))) == 1
    calls = fake_model.embed_calls
    evaluate(fake_model, "caption", coco_dir, shots=[2], selection=["rices"], out_dir=out, batch_size=3,
             progress=False)  # fmt: skip
    assert fake_model.embed_calls - calls == 3  # only the 8 queries (batches of 3), not the 12 support images


def test_vqa_rices_four_shots_beats_zero(vqa_dir, fake_model):
    results = evaluate(fake_model, "vqa", vqa_dir, shots=[0, 4], selection=["rices"], progress=False)
    assert _by(results, shots=4)[0]["mean"] == pytest.approx(100.0)
    assert _by(results, shots=4)[0]["metric"] == "VQA accuracy"
    assert all(len(p) == 8 for p in fake_model.generate_calls)  # batched: 8 queries in one call


def test_classification_with_ensembling(classify_dir, fake_model, tmp_path):
    results = evaluate(fake_model, "classify", classify_dir, shots=[4], selection=["rices"], ensemble=3,
                       out_dir=tmp_path, progress=False)  # fmt: skip
    (top1,) = results  # 4 classes: no top-5 accuracy (test_report.py)
    assert top1["metric"] == "top-1 accuracy" and top1["ensembling"] == 3 and top1["mean"] == pytest.approx(100.0)
    # one prefix per query per ordering, each scoring all 4 class names at once (prefix reuse)
    assert len(fake_model.loglikelihood_calls) == 8 * 3
    assert all(len(c) == 4 for _, c in fake_model.loglikelihood_calls)
    rec = json.loads((tmp_path / "predictions" / "classify_rices_4shot_ens3_trial0.rank0.jsonl").read_text().splitlines()[0])
    assert rec["ranking"][0] == rec["prediction"] and len(rec["ranking"]) == 4


@pytest.mark.parametrize("task,sub", [("video-caption", "caption"), ("video-qa", "qa")])
def test_video_tasks(task, sub, video_dir, fake_model):
    results = evaluate(fake_model, task, video_dir / sub, shots=[2], selection=["rices"], progress=False)
    assert results[0]["n"] == 4 and results[0]["mean"] > 0
    assert all(t.count("<image>") == 3 for call in fake_model.generate_calls for t in call)


def test_interrupted_run_resumes_from_saved_predictions(coco_dir, make_fake, tmp_path):
    args = dict(shots=[2], selection=["random"], trials=1, batch_size=2, progress=False)
    reference = evaluate(make_fake(), "caption", coco_dir, out_dir=tmp_path / "full", **args)

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        evaluate(make_fake(fail_after_generate_calls=2), "caption", coco_dir, out_dir=out, **args)
    pred_file = out / "predictions" / "caption_random_2shot_ens1_trial0.rank0.jsonl"
    assert len(pred_file.read_text().splitlines()) == 4  # two batches of 2 were saved before the interruption
    with open(pred_file, "a") as fh:
        fh.write('{"id": "trunc')  # a line cut mid-write is ignored
    model = make_fake()
    resumed = evaluate(model, "caption", coco_dir, out_dir=out, resume=True, **args)
    assert sum(len(c) for c in model.generate_calls) == 4  # only the 4 remaining queries
    assert resumed[0]["mean"] == pytest.approx(reference[0]["mean"]) and resumed[0]["n"] == 8
    full = {json.loads(x)["id"]: json.loads(x) for x in
            (tmp_path / "full" / "predictions" / pred_file.name).read_text().splitlines()}  # fmt: skip
    again = {}
    for line in pred_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        again[rec["id"]] = rec
    assert again == full

    # without resume the predictions are redone from scratch
    model = make_fake()
    evaluate(model, "caption", coco_dir, out_dir=out, **args)
    assert sum(len(c) for c in model.generate_calls) == 8


def test_limit_and_bad_arguments(coco_dir, fake_model):
    results = evaluate(fake_model, "caption", coco_dir, shots=[2], selection=["random"], trials=1, limit=3,
                       progress=False)  # fmt: skip
    assert results[0]["n"] == 3
    with pytest.raises(ValueError, match="unknown selection 'nearest'"):
        evaluate(fake_model, "caption", coco_dir, shots=[2], selection=["nearest"])
    with pytest.raises(ValueError, match="trials"):
        evaluate(fake_model, "caption", coco_dir, shots=[2], trials=0)
    with pytest.raises(ValueError, match="close-ended"):
        evaluate(fake_model, "caption", coco_dir, shots=[2], ensemble=6)


def test_ids_repeating_across_splits_do_not_exclude_other_examples(vqa_dir, fake_model, tmp_path):
    # question ids restarting at 1 in the val split (as in ShapesWorld's video QA): val question 1 is not train
    # question 1, so RICES may (and here must: same colour and pixels) return train question 1 as nearest.
    root = tmp_path / "vqa"
    shutil.copytree(vqa_dir, root)
    for kind, key in (("questions", "questions"), ("annotations", "annotations")):
        f = root / f"val_{kind}.json"
        data = json.loads(f.read_text())
        for i, row in enumerate(data[key]):
            row["question_id"] = i + 1
        f.write_text(json.dumps(data))
    evaluate(fake_model, "vqa", root, shots=[2], selection=["rices"], out_dir=tmp_path / "out", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "out/predictions/vqa_rices_2shot_ens1_trial0.rank0.jsonl").read_text().splitlines()]
    first = next(r for r in recs if r["id"] == "1")  # val red square, jitter 0 = train question 1's image
    assert first["demos"] == ["2", "1"]  # train questions 1, 2: jitter 0 (nearest, last), 3 (second nearest)
    demo = "<image>Question: What colour is the square? Answer: red<EOC>"
    assert first["prompt"] == demo + demo + "<image>Question: What colour is the square? Answer:"


def test_two_datasets_of_one_task_share_an_output_folder(classify_dir, coco_dir, fake_model, tmp_path):
    other = tmp_path / "colour2"
    shutil.copytree(classify_dir, other)
    for data in (classify_dir, other):
        evaluate(fake_model, "classify", data, shots=[2], selection=["rices"], out_dir=tmp_path / "out",
                 progress=False)  # fmt: skip
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert {r["dataset"] for r in saved} == {classify_dir.name, "colour2"} and len(saved) == 2
    table = (tmp_path / "out" / "results.md").read_text()
    assert f"| classify | {classify_dir.name} | top-1 accuracy |" in table and "| classify | colour2 |" in table


def test_zero_shot_demonstrations_do_not_depend_on_the_query(coco_dir, fake_model, tmp_path):
    """Zero-shot's two text-only demonstrations are fixed: RICES retrieving them by the query image leaked it."""
    out = tmp_path / "run"
    evaluate(fake_model, "caption", coco_dir, shots=[0], selection=["random", "rices"], trials=2, out_dir=out,
             batch_size=3, progress=False)  # fmt: skip
    for stem in ("caption_rices_0shot_ens1_trial0", "caption_random_0shot_ens1_trial0",
                 "caption_random_0shot_ens1_trial1"):  # fmt: skip
        recs = [json.loads(x) for x in (out / "predictions" / f"{stem}.rank0.jsonl").read_text().splitlines()]
        assert len(recs) == 8 and len({tuple(r["demos"]) for r in recs}) == 1, stem
        assert all(len(r["demos"]) == 2 and r["id"] not in r["demos"] for r in recs)


def test_zero_shot_with_one_text_only_demonstration(coco_dir, fake_model, tmp_path):
    """The ablation of the paper's two text-only demonstrations: one, recorded in the results."""
    out = tmp_path / "run"
    results = evaluate(fake_model, "caption", coco_dir, shots=[0, 2], selection=["random"], trials=1, out_dir=out,
                       progress=False, zero_shot_demos=1)  # fmt: skip
    zero = [json.loads(x) for x in (out / "predictions" / "caption_random_0shot_ens1_trial0.rank0.jsonl")
            .read_text().splitlines()]  # fmt: skip
    two = [json.loads(x) for x in (out / "predictions" / "caption_random_2shot_ens1_trial0.rank0.jsonl")
           .read_text().splitlines()]  # fmt: skip
    assert all(len(r["demos"]) == 1 and r["prompt"].count("<image>") == 1 for r in zero)
    assert all(len(r["demos"]) == 2 for r in two)
    assert [r.get("zero_shot_demos") for r in results if r["metric"] == "CIDEr"] == [1, None]


def test_zero_shot_demos_below_one_is_refused(coco_dir):
    from fewshot_eval.datasets import DataError
    from fewshot_eval.evaluate import prepare_data

    with pytest.raises(DataError, match="--zero-shot-demos must be at least 1"):
        prepare_data("caption", coco_dir, [0], zero_shot_demos=0)


def test_zero_shot_selector_passes_over_the_query_itself():
    from fewshot_eval.selection import ZeroShotSelector

    sel = ZeroShotSelector(["a", "b", "c", "d"], seed=1)
    first = sel.select(["x"], 2)[0]
    own = sel.support_ids[first[0]]
    again = sel.select([own], 2)[0]
    assert own not in [sel.support_ids[i] for i in again] and again[0] == first[1]
    assert sel.select(["x", "y"], 2) == [first, first]


def test_limit_spreads_the_queries_over_a_class_sorted_set(classify_dir):
    """Class folders are read class by class: the first N would leave classes out; the limit covers them all."""
    from fewshot_eval.evaluate import prepare_data, spread

    full = prepare_data("classify", classify_dir, [0]).query
    n_classes = len(full.class_names)
    limited = prepare_data("classify", classify_dir, [0], limit=n_classes).query
    assert {ex.target for ex in limited.examples} == set(full.class_names)
    assert [ex.id for ex in limited.examples] == [ex.id for ex in spread(full.examples, n_classes)]
    assert spread(list(range(10)), 4) == [0, 2, 5, 7] and spread(list(range(3)), 5) == [0, 1, 2]
