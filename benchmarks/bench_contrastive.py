"""contrastive_encoder speed and memory: images/s of one training step and peak memory, per preset.

For each preset (default ``nano-minilm`` and ``nfnet-f0-minilm``) at its own resolution: random images and
ShapesWorld-length captions (about 30 tokens), global batch ``--batch``, ClipLoss + AdamW, measured after a
warm-up step, median of ``--repeats`` steps. Three regimes:

- ``full``: both towers train;
- ``lock-text``: the text encoder is frozen (the default when it is pretrained), every caption still encoded;
- ``lock-text+cache``: frozen and its pooled outputs cached per caption (what training sees after one epoch).

Peak memory is the process's resident-set high-water mark (``ru_maxrss``, CPU) or
``torch.cuda.max_memory_allocated`` (GPU), measured in a fresh subprocess per (preset, regime).

Usage: .venv/bin/python benchmarks/bench_contrastive.py [--models nano-minilm nfnet-f0-minilm] [--batch 64]
       [--repeats 3] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CAPTION = "A large striped red circle at the top left. A little dotted blue square is to the right of it."


def measure(preset: str, regime: str, batch: int, repeats: int) -> dict:
    import resource

    import torch

    from contrastive_encoder import ClipLoss, create_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = create_model(preset).to(device)
    if regime != "full":
        model.lock_text()
    size = model.config.image_size
    pixels = torch.randn(batch, 3, size, size, device=device)
    texts = [f"{CAPTION} ({i})" for i in range(batch)]
    tok = {k: v.to(device) for k, v in model.tokenize(texts).items()}
    with torch.no_grad():
        pooled = model.text.pool(**tok)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = ClipLoss()

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        inputs = {"text_pooled": pooled} if regime == "lock-text+cache" else tok
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            img, txt, scale = model(pixels, **inputs)
            loss = loss_fn(img.float(), txt.float(), scale.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    step()  # warm-up
    seconds = statistics.median(step() for _ in range(repeats))
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    counts = model.parameter_counts()
    return {"preset": preset, "regime": regime, "image_size": size, "batch": batch, "seconds_per_step": seconds,
            "images_per_s": batch / seconds, "peak_mb": peak_mb, "device": str(device),
            "trainable": counts["trainable"], "vision_params": counts["vision"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nano-minilm", "nfnet-f0-minilm"], help="model presets to time")
    parser.add_argument("--regimes", nargs="+", default=["full", "lock-text", "lock-text+cache"],
                        help="training regimes to time")
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "REGIME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:  # child process: one measurement, so ru_maxrss is this configuration's own peak
        print(json.dumps(measure(args.one[0], args.one[1], args.batch, args.repeats)))
        return 0
    rows = []
    for preset in args.models:
        for regime in args.regimes:
            cmd = [sys.executable, __file__, "--one", preset, regime, "--batch", str(args.batch),
                   "--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode != 0:
                print(f"{preset} {regime}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'preset':<18}{'regime':<17}{'px':>4}{'batch':>6}{'s/step':>9}{'images/s':>10}{'peak MB':>9}")
    for r in rows:
        print(f"{r['preset']:<18}{r['regime']:<17}{r['image_size']:>4}{r['batch']:>6}{r['seconds_per_step']:>9.3f}"
              f"{r['images_per_s']:>10.1f}{r['peak_mb']:>9.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
