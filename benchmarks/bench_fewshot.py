"""fewshot_eval speed: RICES retrieval and close-ended (classification) scoring.

Measures
  - RICES query latency over 100k random L2-normalised support features (D = 512, k = 32): the faiss exact
    inner-product index used by ``fewshot_eval.rices`` vs a plain torch matmul + top-k, for single queries and
    batches of 64 (ms per query, median of repeats);
  - classification cost for 10 and 100 class names after an 8-shot prompt: with prefix reuse
    (``FlamingoEvalModel.loglikelihood``: the prefix's LM cache and visual tokens computed once, class names
    scored in batches on top of it) vs without (one full forward pass over prefix + class name per class, media
    encoded from pixels each time). The model is a real Flamingo from flamingo_core: the random ``tiny``
    preset by default, ``--model smollm2`` for one on SmolLM2-135M (pretrained, offline).

Usage: .venv/bin/python benchmarks/bench_fewshot.py [--model tiny|smollm2] [--n-support 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_rices(n_support: int, dim: int, k: int, repeats: int) -> dict:
    from fewshot_eval.rices import RICES, l2_normalize

    rng = np.random.default_rng(0)
    support = l2_normalize(rng.standard_normal((n_support, dim), dtype=np.float32))
    ids = [str(i) for i in range(n_support)]
    t0 = time.perf_counter()
    rices = RICES(support, ids)
    build_s = time.perf_counter() - t0
    sup_t = torch.from_numpy(support)
    out = {"n_support": n_support, "dim": dim, "k": k, "faiss_index_build_s": round(build_s, 3),
           "torch_threads": torch.get_num_threads()}  # fmt: skip
    for batch in (1, 64):
        q = l2_normalize(rng.standard_normal((batch, dim), dtype=np.float32))
        q_t = torch.from_numpy(q)
        faiss_ms = _median_ms(lambda: rices.search(q, k), repeats)  # noqa: B023
        torch_ms = _median_ms(lambda: torch.topk(q_t @ sup_t.T, k, dim=1), repeats)  # noqa: B023
        # the two must agree on the neighbours (ties aside)
        got = [sorted(r) for r in rices.search(q, k)]
        ref = [sorted(r) for r in torch.topk(q_t @ sup_t.T, k, dim=1).indices.tolist()]
        out[f"batch{batch}"] = {"faiss_ms_per_query": round(faiss_ms / batch, 4),
                                "torch_ms_per_query": round(torch_ms / batch, 4), "same_neighbours": got == ref}  # fmt: skip
    return out


def _model(preset: str, device: str):
    import flamingo_core as fc
    from fewshot_eval.model import FlamingoEvalModel

    torch.manual_seed(0)
    model = fc.create_model(preset)
    with torch.no_grad():  # open gates: images take part in every layer as in a trained model
        for block in model.xattn_layers:
            block.alpha_xattn.fill_(1.0)
            block.alpha_dense.fill_(1.0)
    return FlamingoEvalModel(model=model, device=device)


def _no_reuse(adapter, prefix, continuations) -> list[tuple[float, int]]:
    """Score each continuation with a full forward pass over prefix + continuation, media from pixels."""
    model, proc = adapter.model, adapter.processor
    out = []
    for cont in continuations:
        batch = proc([prefix])
        cont_ids = adapter.tokenizer(cont, add_special_tokens=False)["input_ids"]
        ids = torch.cat([batch["input_ids"], torch.tensor([cont_ids])], dim=1).to(adapter.device)
        with torch.inference_mode():
            logits = model(ids, torch.ones_like(ids), media=batch["media"].to(adapter.device),
                           media_mask=batch["media_mask"].to(adapter.device),
                           media_frame_mask=batch["media_frame_mask"].to(adapter.device)).logits  # fmt: skip
        logp = torch.log_softmax(logits[0, -len(cont_ids) - 1 : -1].float(), -1)
        out.append((float(logp.gather(-1, torch.tensor(cont_ids, device=logp.device)[:, None]).sum()), len(cont_ids)))
    return out


def bench_classification(preset: str, device: str, shots: int, repeats: int, class_counts=(10, 100)) -> dict:
    from PIL import Image

    from fewshot_eval.prompts import Shot, build_prompt, get_template

    adapter = _model(preset, device)
    rng = np.random.default_rng(0)
    size = int(getattr(adapter.model.vision_encoder, "image_size", 32))
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(shots + 1)]
    template = get_template("classify")
    out = {"preset": preset, "device": device, "shots": shots, "image_size": size}
    for n_classes in class_counts:
        names = [f"object class number {i}" for i in range(n_classes)]
        demos = [Shot(im, names[i % n_classes]) for i, im in enumerate(images[:-1])]
        prefix = build_prompt(demos, Shot(images[-1]), template)
        conts = [template.continuation(n) for n in names]
        adapter._visual_cache.clear()

        def reuse(adapter=adapter, prefix=prefix, conts=conts):
            return adapter.loglikelihood(prefix, conts)

        def reuse_cold(adapter=adapter, prefix=prefix, conts=conts):
            adapter._visual_cache.clear()  # visual tokens recomputed: prefix reuse alone
            return adapter.loglikelihood(prefix, conts)

        a, b = reuse(), _no_reuse(adapter, prefix, conts)
        max_diff = float(np.max(np.abs(np.array(a)[:, 0] - np.array(b)[:, 0])))
        out[f"{n_classes}_classes"] = {
            "prefix_reuse_ms": round(_median_ms(reuse, repeats), 1),
            "prefix_reuse_cold_visual_ms": round(_median_ms(reuse_cold, repeats), 1),
            "no_reuse_ms": round(_median_ms(lambda: _no_reuse(adapter, prefix, conts), max(1, repeats // 2)), 1),  # noqa: B023
            "max_abs_logprob_diff": max_diff,
            "prefix_tokens": int(adapter.processor([prefix])["input_ids"].shape[1]),
        }
        print(f"{n_classes} classes: {out[f'{n_classes}_classes']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-support", type=int, default=100_000, help="support features for the RICES benchmark")
    p.add_argument("--dim", type=int, default=512, help="feature dimension for the RICES benchmark")
    p.add_argument("--k", type=int, default=32, help="neighbours per query")
    p.add_argument("--model", default="tiny", help="flamingo_core model preset for the classification benchmark")
    p.add_argument("--shots", type=int, default=8, help="demonstrations in the classification prompt")
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100], help="class counts to score")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    p.add_argument("--skip-rices", action="store_true", help="only the classification benchmark")
    p.add_argument("--skip-classification", action="store_true", help="only the RICES benchmark")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    results = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads()}
    if not args.skip_rices:
        results["rices"] = bench_rices(args.n_support, args.dim, args.k, args.repeats)
        print(json.dumps(results["rices"], indent=1), flush=True)
    if not args.skip_classification:
        results["classification"] = bench_classification(args.model, args.device, args.shots, args.repeats,
                                                         args.classes)
        print(json.dumps(results["classification"], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
