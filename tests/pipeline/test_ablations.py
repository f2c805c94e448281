"""tools/run_ablations.py: each variant changes what it says (and its flags exist), and the comparison table
repeats the numbers of the variants' results files."""

from __future__ import annotations

import json

import run_ablations
import run_pipeline


def test_variants_change_only_what_they_name_and_their_flags_parse():
    from flamingo_core.train import build_parser

    base = run_ablations.VARIANTS["default"][1]
    assert run_ablations.VARIANTS["no-structured"][1].m3w_structured == 0.0 < base.m3w_structured
    for name, flag in (("no-m3w", "--weights"), ("round-robin", "--strategy")):
        preset = run_ablations.VARIANTS[name][1]
        extra = preset.stage2_args[len(base.stage2_args):]
        assert extra[0] == flag and preset.stage2_args[: len(base.stage2_args)] == base.stage2_args
        build_parser().parse_args(["--data", "d", *preset.stage2_args])  # the flags exist
    cfg = build_parser().parse_args(["--data", "d", *run_ablations.VARIANTS["round-robin"][1].stage2_args])
    assert cfg.strategy == "round-robin"
    assert "m3w=0" in run_ablations.VARIANTS["no-m3w"][1].stage2_args[-1]
    assert base.eval_shots == run_ablations.SHOTS and set(base.eval_tasks) == set(run_ablations.TASKS)


def _record(selection, shots, mean, metric="top-1 accuracy"):
    return {"selection": selection, "shots": shots, "metric": metric, "mean": mean, "ci95": [mean - 5, mean + 5]}


def test_table_repeats_the_variants_numbers(tmp_path):
    for variant, bind in (("default", [12.0, 30.0, 41.0, 50.0]), ("no-structured", [13.0, 14.0, 15.0, 15.0])):
        for task in run_ablations.TASKS:
            sel = run_pipeline.SELECTIONS[task][0]
            metric = {"vqa": "VQA accuracy", "caption": "CIDEr"}.get(task, "top-1 accuracy")
            values = bind if task == "bind" else [1.0, 2.0, 3.0, 4.0]
            recs = [_record(sel, k, v, metric) for k, v in zip(run_ablations.SHOTS, values)]
            if task == "classify" and variant == "default":
                recs += [_record("rices", k, 50.0 + k) for k in run_ablations.SHOTS]
            path = tmp_path / variant / "eval" / task / "results.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"results": recs}))
    text, numbers = run_ablations.table(tmp_path)
    default = next(line for line in text.splitlines() if line.startswith("| default"))
    assert "| 12.0 [7.0, 17.0] | 30.0 [25.0, 35.0] | 41.0 [36.0, 46.0] | 50.0 [45.0, 55.0] |" in default
    assert default.endswith("| +38.0 |")  # the gain from 0 to the largest shot count
    assert next(line for line in text.splitlines() if line.startswith("| no-structured")).endswith("| +2.0 |")
    assert "| no-m3w" in text and numbers["no-m3w"]["bind/0"] is None  # not run: cells say so, no number made up
    assert "| classify | rices | 50.0 [45.0, 55.0] | 54.0 [49.0, 59.0] | 58.0 [53.0, 63.0] | 66.0 [61.0, 71.0] |" in text
    assert numbers["default"]["bind/8"]["mean"] == 41.0
