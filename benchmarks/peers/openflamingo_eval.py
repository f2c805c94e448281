"""OpenFlamingo 2.0.1's own evaluation code (``open_flamingo/eval/evaluate.py``: ``evaluate_vqa``,
``evaluate_captioning``) on a tiny OpenFlamingo model and ShapesWorld's VQAv2 / COCO files, with the
demonstrations given: the peer side of tests/fewshot_eval/test_openflamingo_crosscheck.py and of
benchmarks/bench_eval_vs_openflamingo.py. Run as a script (a process of its own: the peer's modules import each
other as top-level ``utils``, ``eval_datasets``, ..., and its evaluation needs a process group):

    python benchmarks/peers/openflamingo_eval.py SPEC.json OUT.json

SPEC holds ``task`` (``vqa`` or ``caption``), ``lm`` (the LM folder), ``checkpoint`` (the trainable weights as
safetensors), ``data`` (ShapesWorld's ``eval/vqav2`` or ``eval/coco`` folder), ``work`` (a scratch folder),
``batch_size``, and ``runs``: a list of {``shots``, ``queries`` (query ids in order), ``demos`` (each query's
demonstration ids)}. OUT gets, per run: the prompts, raw outputs and predictions by query id, the score as the
peer reports it, and the seconds its evaluation call took.

What stands in for parts the pip package lacks or this machine cannot run, each as close to the peer as it goes:

- ``EvalModel``: OpenFlamingo's ``open_flamingo/eval/models/open_flamingo.py`` is not in the 2.0.1 wheel; the
  class below reproduces its ``get_outputs`` (left padding, ``generate`` with min / max new tokens, beams and
  length penalty, the prompt cut off, ``batch_decode(skip_special_tokens=True)``) and its prompts, with one
  addition: ``<image>`` is never generated (its logit is -inf, as in this package's generation: a generated
  ``<image>`` would need media the prompt does not hold).
- the demonstrations: ``utils.sample_batch_demos_from_query_set`` returns the given ones (the peer samples them
  from a random 2048-example subset of the training set), ``prepare_eval_samples`` keeps the given query order.
- the image folders: the peer reads VQAv2 images as ``<dir>/COCO_<split>_<id:012d>.jpg`` from folders named
  train2014 / val2014; links in that layout point at ShapesWorld's PNGs (Pillow reads them by content). Its
  caption score reads a COCO captions annotation file, written from the Karpathy JSON.
- METEOR and SPICE: the peer's CIDEr comes from ``COCOEvalCap.evaluate``, which also runs METEOR (a Java process
  of 2 GB) and SPICE (which downloads Stanford CoreNLP models at first use); the peer reports neither, so both
  score 0 here without running.
- ``sklearn.metrics.roc_auc_score`` (imported at the top of the peer's evaluate.py, used only by HatefulMemes)
  is stubbed where scikit-learn is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import openflamingo_peer as peer  # noqa: E402

EVAL_DIR = peer.PEER_SITE / "open_flamingo" / "eval"


def _import_peer_evaluate():
    """The peer's ``evaluate`` module, its sibling modules importable by their bare names."""
    peer.import_openflamingo()
    sys.path.insert(0, str(EVAL_DIR))
    try:
        import sklearn.metrics  # noqa: F401
    except ImportError:  # only HatefulMemes uses it
        stub = types.ModuleType("sklearn.metrics")
        stub.roc_auc_score = None
        sys.modules.setdefault("sklearn", types.ModuleType("sklearn"))
        sys.modules["sklearn.metrics"] = stub
    spec = importlib.util.spec_from_file_location("openflamingo_evaluate", EVAL_DIR / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EvalModel:
    """OpenFlamingo's eval ``EvalModel`` (open_flamingo/eval/models/open_flamingo.py) on an in-memory model."""

    def __init__(self, model, image_processor, tokenizer):
        self.model, self.image_processor, self.tokenizer = model, image_processor, tokenizer
        self.device, self.lm_name = "cpu", "tiny"
        self.tokenizer.padding_side = "left"
        media_id = tokenizer.convert_tokens_to_ids("<image>")

        def no_media_token(module, args, logits):  # -inf before generate normalises the scores, as ours
            logits[..., media_id] = float("-inf")
            return logits

        model.lang_encoder.get_output_embeddings().register_forward_hook(no_media_token)
        self.calls: list[tuple[list[str], list[str]]] = []  # (prompts, outputs) of each batch

    def _prepare_images(self, batch):
        import torch

        images_per_example = max(len(x) for x in batch)
        out = None
        for i, example in enumerate(batch):
            for j, image in enumerate(example):
                pixels = self.image_processor(image)
                if out is None:
                    out = torch.zeros((len(batch), images_per_example, 1) + pixels.shape, dtype=pixels.dtype)
                out[i, j, 0] = pixels
        return out

    def get_outputs(self, batch_text, batch_images, min_generation_length, max_generation_length, num_beams,
                    length_penalty):  # fmt: skip
        import torch

        enc = self.tokenizer(batch_text, padding="longest", truncation=True, return_tensors="pt", max_length=2000)
        with torch.inference_mode():
            out = self.model.generate(
                self._prepare_images(batch_images), enc["input_ids"], attention_mask=enc["attention_mask"],
                min_new_tokens=min_generation_length, max_new_tokens=max_generation_length, num_beams=num_beams,
                length_penalty=length_penalty,
            )  # fmt: skip
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        self.calls.append((list(batch_text), list(texts)))
        return texts

    def get_vqa_prompt(self, question, answer=None) -> str:
        return f"<image>Question:{question} Short answer:{answer if answer is not None else ''}" + (
            "<|endofchunk|>" if answer is not None else "")

    def get_caption_prompt(self, caption=None) -> str:
        return f"<image>Output:{caption if caption is not None else ''}" + (
            "<|endofchunk|>" if caption is not None else "")


class _NotRun:
    """A pycocoevalcap scorer that is not run (METEOR, SPICE: see the module docstring)."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return type(self).__name__


def _skip_unreported_scorers() -> None:
    import pycocoevalcap.eval as coco_eval

    coco_eval.Meteor = type("Meteor", (_NotRun,), {})
    coco_eval.Spice = type("Spice", (_NotRun,), {})


def _vqa_layout(data: Path, work: Path) -> dict:
    """The peer's VQAv2 arguments over ShapesWorld's files, images linked as COCO names them."""
    paths = {}
    for split, coco in (("train", "train2014"), ("val", "val2014")):
        folder = work / coco
        folder.mkdir(parents=True, exist_ok=True)
        for q in json.loads((data / f"{split}_questions.json").read_text())["questions"]:
            link = folder / f"COCO_{coco}_{q['image_id']:012d}.jpg"
            if not link.exists():
                link.symlink_to(data / "images" / f"{q['image_id']:012d}.png")
        side = "train" if split == "train" else "test"
        paths.update({f"vqav2_{side}_image_dir_path": str(folder),
                      f"vqav2_{side}_questions_json_path": str(data / f"{split}_questions.json"),
                      f"vqav2_{side}_annotations_json_path": str(data / f"{split}_annotations.json")})
    return paths


def _coco_layout(data: Path, work: Path) -> dict:
    """The peer's COCO arguments: the Karpathy JSON (its images under filepath "images", so the "val" folder)
    and a COCO captions file of the test images for its CIDEr."""
    karpathy = data / "dataset_coco.json"
    images = json.loads(karpathy.read_text())["images"]
    test = [im for im in images if im["split"] == "test"]
    annotations = {"info": {}, "licenses": [], "type": "captions",
                   "images": [{"id": im["cocoid"], "file_name": im["filename"]} for im in test],
                   "annotations": [{"image_id": im["cocoid"], "id": s["sentid"], "caption": s["raw"]}
                                   for im in test for s in im["sentences"]]}  # fmt: skip
    (work / "captions_test.json").write_text(json.dumps(annotations))
    return {"coco_train_image_dir_path": str(data / "images"), "coco_val_image_dir_path": str(data / "images"),
            "coco_karpathy_json_path": str(karpathy), "coco_annotations_json_path": str(work / "captions_test.json")}


def _key(task: str, item: dict) -> str:
    return str(item["question_id"] if task == "vqa" else item["image_id"])


def run(spec: dict) -> list[dict]:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    torch.set_num_threads(int(os.environ.get("PEER_THREADS", torch.get_num_threads())))
    task, data, work = spec["task"], Path(spec["data"]), Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    of_eval = _import_peer_evaluate()
    _skip_unreported_scorers()
    utils = of_eval.utils
    peer.register_tiny_vit(work)
    model, image_processor, tok = peer.build_tiny_peer(Path(spec["lm"]), Path(spec["checkpoint"]))
    eval_model = EvalModel(model, image_processor, tok)
    paths = _vqa_layout(data, work) if task == "vqa" else _coco_layout(data, work)
    args = argparse.Namespace(model="open_flamingo", num_samples=-1, batch_size=spec["batch_size"], rices=False,
                              query_set_size=2048, rank=0, world_size=1, **paths)  # fmt: skip
    results, captured = [], {}
    score_vqa, score_cider = of_eval.compute_vqa_accuracy, of_eval.compute_cider  # the peer's own, wrapped per run

    for r in spec["runs"]:
        pending = list(r["demos"])

        def eval_samples(dataset, num_samples, batch_size, r=r):
            index = {_key(task, dataset[i]): i for i in range(len(dataset))}
            subset = torch.utils.data.Subset(dataset, [index[q] for q in r["queries"]])
            return torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=utils.custom_collate_fn)

        def query_set(train_dataset, size):
            return [train_dataset[i] for i in range(len(train_dataset))]

        def sample_demos(query_set, num_samples, batch_size, pending=pending):
            by_id = {_key(task, x): x for x in query_set}
            batch = [pending.pop(0) for _ in range(batch_size)]
            assert all(len(d) == num_samples for d in batch), "demonstration counts differ from the peer's"
            return [[by_id[i] for i in demos] for demos in batch]

        def keep(score_fn):
            def wrapped(result_path, *a, **kw):
                captured["predictions"] = json.loads(Path(result_path).read_text())
                return score_fn(result_path, *a, **kw)
            return wrapped

        utils.prepare_eval_samples, utils.get_query_set = eval_samples, query_set
        utils.sample_batch_demos_from_query_set = sample_demos
        eval_model.calls.clear()
        cwd = os.getcwd()
        os.chdir(work)  # the peer writes its results file into the working folder
        try:
            if task == "vqa":
                of_eval.compute_vqa_accuracy = keep(score_vqa)
                start = time.perf_counter()
                score = of_eval.evaluate_vqa(args, eval_model, num_shots=r["shots"], dataset_name="vqav2")
            else:
                of_eval.compute_cider = keep(score_cider)
                start = time.perf_counter()
                score = of_eval.evaluate_captioning(args, eval_model, num_shots=r["shots"], dataset_name="coco")
            seconds = time.perf_counter() - start
        finally:
            os.chdir(cwd)
        prompts = [p for batch, _ in eval_model.calls for p in batch]
        raw = [o for _, outs in eval_model.calls for o in outs]
        preds = captured["predictions"]
        key = "answer" if task == "vqa" else "caption"
        id_key = "question_id" if task == "vqa" else "image_id"
        results.append({"shots": r["shots"], "score": score, "seconds": seconds,
                        "prompts": dict(zip(r["queries"], prompts)), "raw": dict(zip(r["queries"], raw)),
                        "predictions": {str(p[id_key]): p[key] for p in preds}})  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    a.out.write_text(json.dumps(run(json.loads(a.spec.read_text())), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
