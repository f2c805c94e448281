"""Memory of the frozen parts in fp32 and in bf16 (``create_model(dtype=...)``, the paper's layout: frozen LM and
vision tower in bf16, the trained resampler / cross-attention / new token rows with fp32 weights), and the time
of one training step and of greedy decoding in each.

Each dtype is built in its own process (so one model's allocations do not count against the other): parameter
bytes of the frozen LM, the frozen tower and the trained parts; the process's RSS after building (and its peak
while loading) and after the steps; the median
of ``--steps`` training steps (batch 4 x 64 tokens, one image each, AdamW on the trained parts) and of 20-token
greedy decodes. On CPUs without native bf16 arithmetic bf16 is slower: the saving this buys is memory.

Usage: .venv/bin/python benchmarks/bench_frozen_dtype.py [--model smollm2] [--vision-encoder nano-minilm]
       [--steps 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def _rss_mb() -> float:
    """The process's resident memory now (Linux), not its high-water mark: loading a GGUF LM dequantizes it in
    fp32 before the cast, a transient ``ru_maxrss`` would report as the model's size."""
    import ctypes
    import gc

    gc.collect()
    try:  # hand freed heap pages back first (glibc keeps them), so RSS counts live tensors
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def measure(model_name: str, vision: str, dtype: str, steps: int) -> dict:
    import numpy as np
    from PIL import Image

    import flamingo_core as fc

    model = fc.create_model(model_name, vision_encoder=vision, dtype=dtype)
    rss_built, peak_built = _rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = model.vision_encoder.image_size
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(4)]
    words = "a red circle on the left of a small blue square " * 8
    enc = model.processor([[im, words] for im in images], max_length=64)
    labels = fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-4)
    step_s = []
    for _ in range(steps):
        t = time.perf_counter()
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t)
    prompt = model.processor([[images[0], "A photo of"]])
    decode_s = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            model.generate(prompt["input_ids"], prompt["attention_mask"], prompt["media"], max_new_tokens=20,
                           min_new_tokens=20, num_beams=1)
            decode_s.append(time.perf_counter() - t)
    return {
        "dtype": dtype,
        "lm_param_mb": _bytes(model.lm.parameters()) / 2**20,
        "vision_param_mb": _bytes(model.vision_encoder.parameters()) / 2**20,
        "trained_param_mb": _bytes(trained) / 2**20,
        "trained_dtypes": sorted({str(p.dtype) for p in trained}),
        "rss_after_build_mb": rss_built,
        "peak_rss_while_loading_mb": peak_built,
        "rss_after_steps_mb": _rss_mb(),
        "train_step_s_median": statistics.median(step_s),
        "train_step_s_range": [min(step_s), max(step_s)],
        "decode_ms_per_token_median": statistics.median(decode_s) / 20 * 1000,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="flamingo_core model preset (smollm2 = SmolLM2-135M)")
    p.add_argument("--vision-encoder", default="nano-minilm", help="vision encoder name")
    p.add_argument("--steps", type=int, default=5, help="training steps timed per dtype")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.model, args.vision_encoder, args.worker, args.steps)))
        return 0
    rows = []
    for dtype in ("float32", "bfloat16"):
        cmd = [sys.executable, __file__, "--model", args.model, "--vision-encoder", args.vision_encoder,
               "--steps", str(args.steps), "--worker", dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    fp32, bf16 = rows
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "model": args.model, "vision_encoder": args.vision_encoder,
        "rows": rows,
        "frozen_ratio_bf16_over_fp32": (bf16["lm_param_mb"] + bf16["vision_param_mb"])
        / (fp32["lm_param_mb"] + fp32["vision_param_mb"]),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
