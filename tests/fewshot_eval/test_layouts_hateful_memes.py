"""Hateful Memes in Facebook's layout (train.jsonl, dev_seen.jsonl, test_seen.jsonl, img/xxxxx.png): the loader,
the task's classes and prompt text, and its ROC-AUC over the probability of "yes" from the saved rankings."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from fewshot_helpers import write_image

from fewshot_eval.datasets import DataError, load_task_data
from fewshot_eval.metrics.roc_auc import positive_probability, roc_auc
from fewshot_eval.scoring import METRICS, score_predictions, task_metrics

SPLITS = {"train": 8, "dev_seen": 4, "test_seen": 6}


@pytest.fixture(scope="module")
def memes(tmp_path_factory):
    root = tmp_path_factory.mktemp("hateful_memes")
    n = 0
    for split, count in SPLITS.items():
        rows = []
        for i in range(count):
            n += 1
            meme_id = 10000 + n
            write_image(root / "img" / f"{meme_id}.png", "red" if i % 2 else "blue")
            rows.append({"id": meme_id, "img": f"img/{meme_id}.png", "label": i % 2, "text": f"meme text {n}"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_hateful_memes_layout(memes):
    support, query = load_task_data("hateful-memes", memes)
    assert (support.split, query.split, len(support), len(query)) == ("train", "test_seen", 8, 6)
    assert support.class_names == query.class_names == ["no", "yes"]
    ex = query.examples[1]
    assert (ex.id, ex.target, ex.references, ex.question) == ("10014", "yes", ("yes",), "meme text 14")
    assert ex.media == memes / "img" / "10014.png" and ex.media.is_file()
    assert task_metrics("hateful-memes", query) == METRICS["hateful-memes"] == ["ROC-AUC"]


def test_bad_rows_are_skipped_and_an_unlabelled_file_is_one_line(memes, tmp_path):
    root = tmp_path / "hm"
    shutil.copytree(memes, root)
    with open(root / "test_seen.jsonl", "a") as fh:
        fh.write(json.dumps({"id": 1, "img": "img/10001.png", "label": 2, "text": "x"}) + "\n")
        fh.write(json.dumps({"id": 2, "img": "img/10001.png", "label": 1}) + "\n")
        fh.write(json.dumps({"id": 3, "img": "img/10001.png", "label": 0, "text": "an <image> inside"}) + "\n")
    _, query = load_task_data("hateful-memes", root)
    assert len(query) == 6 and sum(query.skipped.values()) == 3
    (root / "test_seen.jsonl").unlink()  # the next candidate query split
    assert load_task_data("hateful-memes", root)[1].split == "dev_seen"
    rows = [{"id": 5, "img": "img/10001.png", "text": "no label: the first release's test.jsonl"}]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        load_task_data("hateful-memes", root, split="test")
    assert "\n" not in str(e.value) and str(root / "test.jsonl") in str(e.value) and "'label'" in str(e.value)
    with pytest.raises(DataError) as e:
        load_task_data("hateful-memes", root, split="dev_unseen")
    assert "splits present: dev_seen, test, train" in str(e.value)


def _record(qid: str, p_yes: float) -> dict:
    """A close-ended prediction record as the runner saves it, scores = per-token log-likelihoods."""
    s_yes, s_no = math.log(p_yes) - 0.3, math.log(1 - p_yes) - 0.3  # any common shift: the softmax is the same
    ranking = ["yes", "no"] if s_yes >= s_no else ["no", "yes"]
    scores = sorted([s_yes, s_no], reverse=True)
    return {"id": qid, "prediction": ranking[0], "ranking": ranking, "scores": scores}


def test_roc_auc_from_the_saved_rankings(memes):
    _, query = load_task_data("hateful-memes", memes)
    p_yes = [0.2, 0.7, 0.6, 0.4, 0.6, 0.9]  # labels alternate 0, 1: one inversion (0.6 > 0.4) and one tie
    records = {ex.id: _record(ex.id, p) for ex, p in zip(query.examples, p_yes)}
    assert positive_probability(records[query.examples[1].id], "yes") == pytest.approx(0.7)
    means, each = score_predictions("hateful-memes", records, query, per_query=True)
    # positives 0.7, 0.4, 0.9 against negatives 0.2, 0.6, 0.6: 1+1+1 + 1+0+0 + 1+1+1 = 7 of 9
    assert means == {"ROC-AUC": pytest.approx(100 * 7 / 9)}
    assert sum(each["ROC-AUC"].values()) / len(query) == pytest.approx(100 * 7 / 9)  # what the bootstrap resamples
    labels = [int(e.target == "yes") for e in query.examples]
    assert means["ROC-AUC"] == pytest.approx(100 * roc_auc(labels, p_yes))
    del records[query.examples[0].id]["scores"]
    with pytest.raises(ValueError, match="no score of class 'yes'"):
        score_predictions("hateful-memes", records, query)
