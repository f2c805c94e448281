"""Cross-check with OpenFlamingo 2.0.1's own evaluator (``open_flamingo/eval/evaluate.py``): on ShapesWorld's
VQAv2 and COCO files, a tiny random OpenFlamingo model evaluated by the peer, and the same model converted
(``flamingo_core.openflamingo``) evaluated here under ``--protocol openflamingo``, with the same
demonstrations, give the same prompts, raw outputs, predictions and scores at 0, 4 and 8 shots (VQA by the
peer's copy of the VQA scorer; CIDEr by pycocoevalcap on both sides).

The peer runs in a process of its own (benchmarks/peers/openflamingo_eval.py, which says what stands in for the
parts the pip package lacks). Needs the peer (`bash benchmarks/peers/install_openflamingo.sh`, which `make test`
runs), pycocoevalcap and Java (CI installs both).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_eval.evaluate import evaluate
from fewshot_eval.metrics.coco_caption import INSTALL_OFFICIAL, official_scorer_missing
from fewshot_eval.model import EOC, FlamingoEvalModel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
sys.path.insert(0, str(ROOT / "tools"))
import openflamingo_peer as peer  # noqa: E402

SHOTS = [0, 4, 8]
TASKS = {"vqa": ("vqav2", "VQA accuracy"), "caption": ("coco", "CIDEr")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(ShapesWorld folder, LM folder, peer checkpoint, converted model folder)."""
    if not peer.is_installed():
        pytest.skip(f"OpenFlamingo 2.0.1 is not installed: run `{peer.INSTALL_COMMAND}`")
    if official_scorer_missing():
        pytest.skip(f"the caption cross-check scores with pycocoevalcap: {INSTALL_OFFICIAL}")
    from safetensors.torch import save_file

    import shapesworld
    from flamingo_core.openflamingo import from_openflamingo

    root = tmp_path_factory.mktemp("crosscheck")
    world = shapesworld.generate(root / "world", image_size=32)
    peer.register_tiny_vit(root)
    lm = peer.save_tiny_lm(root / "lm", "mpt", max_seq_len=2048)  # 8 shots of byte tokens pass 512
    theirs, _, _ = peer.build_tiny_peer(lm, seed=3)
    state = peer.filter_state_dict_to_trainable()(theirs, theirs.state_dict())
    checkpoint = root / "checkpoint.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(checkpoint))
    ours = from_openflamingo(checkpoint, lm=str(lm), vision=f"open_clip:{peer.TINY_VIT}")
    ours.save_pretrained(root / "converted")
    return world, lm, checkpoint, root / "converted"


def _ours(setup, task: str, tmp: Path) -> dict[int, dict]:
    world, _, _, model_dir = setup
    folder, metric = TASKS[task]
    results = evaluate(FlamingoEvalModel(model_dir, device="cpu"), task, world / "eval" / folder, shots=SHOTS,
                       selection=["random"], trials=1, out_dir=tmp, batch_size=4, progress=False,
                       protocol="openflamingo", caption_scorer="pycocoevalcap")  # fmt: skip
    by_k = {}
    for k in SHOTS:
        path = tmp / "predictions" / f"{task}_random_{k}shot_ens1_trial0.rank0.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        score = next(r["mean"] for r in results if r["shots"] == k and r["metric"] == metric)
        by_k[k] = {"records": records, "score": score}
    return by_k


def _peer(setup, task: str, ours: dict[int, dict], tmp: Path) -> dict[int, dict]:
    world, lm, checkpoint, _ = setup
    runs = [{"shots": k, "queries": [r["id"] for r in ours[k]["records"]],
             "demos": [r["demos"] for r in ours[k]["records"]]} for k in SHOTS]  # fmt: skip
    spec = {"task": task, "lm": str(lm), "checkpoint": str(checkpoint), "data": str(world / "eval" / TASKS[task][0]),
            "work": str(tmp / "peer"), "batch_size": 4, "runs": runs}  # fmt: skip
    (tmp / "spec.json").write_text(json.dumps(spec))
    script = ROOT / "benchmarks" / "peers" / "openflamingo_eval.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp / "spec.json"), str(tmp / "peer.json")],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["shots"]: r for r in json.loads((tmp / "peer.json").read_text())}


@pytest.mark.parametrize("task", list(TASKS))
def test_same_prompts_predictions_and_scores_as_openflamingos_evaluator(setup, task, tmp_path):
    ours = _ours(setup, task, tmp_path / "ours")
    theirs = _peer(setup, task, ours, tmp_path)
    for k in SHOTS:
        records = {r["id"]: r for r in ours[k]["records"]}
        assert set(records) == set(theirs[k]["prompts"]) and len(records) >= 4
        for qid, r in records.items():
            assert r["prompt"].replace(EOC, "<|endofchunk|>") == theirs[k]["prompts"][qid], (k, qid)
            assert r["raw"] == theirs[k]["raw"][qid], (k, qid)
            assert r["prediction"] == theirs[k]["predictions"][qid], (k, qid)
        if task == "vqa":  # the peer's VQA scorer prints the overall accuracy rounded to 2 decimals
            assert round(ours[k]["score"], 2) == pytest.approx(theirs[k]["score"], abs=1e-9), k
        else:
            assert ours[k]["score"] == pytest.approx(theirs[k]["score"], abs=1e-9), k
    # the prompts are the protocol's: k demonstrations with images, or two text-only ones at 0 shots
    some = {k: next(iter(theirs[k]["prompts"].values())) for k in SHOTS}
    assert [some[k].count("<image>") for k in SHOTS] == [1, 5, 9] and some[0].count("<|endofchunk|>") == 2
    assert len({p for k in SHOTS for p in theirs[k]["raw"].values()}) > 3  # not one degenerate output
