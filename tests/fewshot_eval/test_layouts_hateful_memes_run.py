"""``fewshot-eval run --task hateful-memes`` end to end on Facebook's layout: OpenFlamingo's prompt with the
meme's text, both class names scored after it, ROC-AUC over the probability of "yes" in results.json."""

from __future__ import annotations

import json

from fewshot_helpers import write_image

from fewshot_eval import cli
from fewshot_eval.metrics.roc_auc import roc_auc


def test_hateful_memes_run(tmp_path, loads):
    root = tmp_path / "hm"
    for split, count in (("train", 6), ("dev_seen", 6)):
        rows = []
        for i in range(count):
            meme_id = f"{split[0]}{i:04d}"
            write_image(root / "img" / f"{meme_id}.png", "red" if i % 2 else "blue")
            rows.append({"id": meme_id, "img": f"img/{meme_id}.png", "label": i % 2, "text": f"text {i}"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "model").mkdir()
    out = tmp_path / "out"
    argv = ["run", "--model", str(tmp_path / "model"), "--task", "hateful-memes", "--data", str(root), "--shots",
            "2", "--selection", "rices", "--ensemble", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    prefix, conts = loads[0].loglikelihood_calls[0]
    assert "<image>is an image with: 'text 0' written on it. Is it hateful? Answer: " in prefix
    assert sorted(conts) == [" no<EOC>", " yes<EOC>"]
    preds = [json.loads(x) for x in (out / "predictions" / "hateful-memes_rices_2shot_ens2_trial0.rank0.jsonl")
             .read_text().splitlines()]  # fmt: skip
    assert len(preds) == 6 and all(sorted(p["ranking"]) == ["no", "yes"] and len(p["scores"]) == 2 for p in preds)
    (result,) = json.loads((out / "results.json").read_text())["results"]
    assert (result["metric"], result["split"], result["chance"], result["n"]) == ("ROC-AUC", "dev_seen", 50.0, 6)
    labels = [int(p["id"][1:]) % 2 for p in preds]
    p_yes = [1 / (1 + 2.718281828459045 ** (p["scores"][p["ranking"].index("no")]
                                             - p["scores"][p["ranking"].index("yes")])) for p in preds]  # fmt: skip
    assert abs(result["mean"] - 100 * roc_auc(labels, p_yes)) < 1e-9
