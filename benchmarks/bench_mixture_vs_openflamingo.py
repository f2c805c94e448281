"""Real label tokens per second on the paper's training mixture: this suite's recipe against OpenFlamingo 2.0.1's.

Each optimizer step trains on one batch of each source of the paper's mixture (arXiv 2204.14198, Section 2.4
and Table 5: M3W 1.0, LTIP 0.2, ALIGN 0.2, VTP 0.03, gradients accumulated over the sources), on the same LM,
vision tower and samples for both implementations. What differs is the recipe:

- ours (``flamingo_core.train.train_step``): image-text and video-text pairs packed into rows of their source's
  window (``flamingo_core.packing``: ALIGN 32, LTIP 64, VTP 32 tokens), M3W rows right-padded to the longest
  in the batch, padding media slots not encoded (``media_mask``), one accumulated step over the sources;
- OpenFlamingo's (its ``train/train_utils.py`` and ``train/data.py``): one forward and backward per dataset,
  pairs padded to the longest caption of the batch (its LAION pipeline, ``padding="longest"``), interleaved
  documents padded to the full 256 tokens (its MMC4 pipeline, ``padding="max_length"``) and their images to
  the maximum of 5 with zero images (which its vision tower still encodes); the loss weights as ours, gradient
  norm clipped at 1 as both do.

VTP (weight 0.03) is left out of the default batch: OpenFlamingo 2.0.1 has no video input (its
``_encode_vision_x`` asserts one frame); ``--batch ...,vtp=N`` times ours alone with it.

Samples are generated: caption lengths log-normal (sigma 0.5) around the paper's means (ALIGN 12.4, LTIP 20.5
tokens, Appendix A.3; VTP, for which the paper gives none, 20.5 too), cut to the window; M3W rows are full
256-token windows with 1-5 images each (uniform), as the paper's windows of long documents. Pixels are random.
"Real label tokens" are those both implementations predict: every non-padding token but a sequence's first and
its ``<image>`` tokens - the same count for both, so the tokens/s ratio is the step-time ratio.

The two implementations run in their own processes and take turns, one step each (``bench_vs_openflamingo.py``'s
protocol); the speedup is the median of the per-turn ratios.

Usage: .venv/bin/python benchmarks/bench_mixture_vs_openflamingo.py [--steps 8] [--batch m3w=2,ltip=16,align=16]
       [--lm smollm2-135m] [--vision nano-minilm] [--every 4] [--device cuda --precision bf16]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_vs_openflamingo as pair  # noqa: E402  (its model builders, timing and memory figures)

WEIGHTS = {"m3w": 1.0, "ltip": 0.2, "align": 0.2, "vtp": 0.03}  # Table 5
WINDOW = {"m3w": 256, "ltip": 64, "align": 32, "vtp": 32}  # Appendix A.3 sequence lengths
MEAN_CAPTION = {"ltip": 20.5, "align": 12.4, "vtp": 20.5}  # tokens; VTP: not given, LTIP's taken
MAX_IMAGES, FRAMES, SIGMA = 5, 8, 0.5
# VTP is left out by default: OpenFlamingo 2.0.1 takes one frame per image ("Only single frame supported")
DEFAULT_BATCH = "m3w=2,ltip=16,align=16"


def parse_batch(text: str) -> dict[str, int]:
    sizes = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name not in WEIGHTS or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--batch entry {part!r}: expected NAME=N with NAME one of {', '.join(WEIGHTS)}")
        sizes[name] = int(value)
    return sizes


def samples(step: int, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """The step's samples per source: ``length`` (tokens, all included) and ``images`` (positions of the
    ``<image>`` tokens), drawn from a generator seeded by the step so that both implementations get the same."""
    g = torch.Generator().manual_seed(1000 + step)
    out = {}
    for name, n in sizes.items():
        rows = []
        for _ in range(n):
            if name == "m3w":
                k = int(torch.randint(1, MAX_IMAGES + 1, (1,), generator=g))
                at = sorted(torch.randperm(WINDOW[name] - 2, generator=g)[:k].add(1).tolist())
                rows.append({"length": WINDOW[name], "images": at})
            else:  # start, <image>, caption, end of chunk
                mu = math.log(MEAN_CAPTION[name]) - SIGMA**2 / 2
                caption = math.exp(mu + SIGMA * float(torch.randn(1, generator=g)))
                rows.append({"length": min(WINDOW[name], max(1, round(caption)) + 3), "images": [1]})
        out[name] = rows
    return out


def real_tokens(step_samples: dict[str, list[dict]]) -> int:
    return sum(s["length"] - 1 - len(s["images"]) for rows in step_samples.values() for s in rows)


def _tensors(rows: list[dict], width: int, media_id: int, start_id: int, end_id: int, image_size: int,
             slots: int, g: torch.Generator) -> dict:
    """Right-padded ids / mask / labels (<image> and padding ignored) and (B, slots, T, C, H, W) pixels with a
    mask of the real slots; ids random text tokens, the first one ``start_id``, the last ``end_id``."""
    b = len(rows)
    ids = torch.randint(100, 20000, (b, width), generator=g)
    mask = torch.zeros(b, width, dtype=torch.long)
    frames = FRAMES if slots == 0 else 1
    media = torch.randn(b, max(slots, 1), frames, 3, image_size, image_size, generator=g)
    media_mask = torch.zeros(b, max(slots, 1), dtype=torch.bool)
    for i, s in enumerate(rows):
        n = s["length"]
        mask[i, :n] = 1
        ids[i, 0], ids[i, n - 1], ids[i, n:] = start_id, end_id, 0
        ids[i, s["images"]] = media_id
        media_mask[i, : len(s["images"])] = True
    labels = ids.masked_fill((mask == 0) | (ids == media_id), -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "media": media, "media_mask": media_mask}


# ---------------------------------------------------------------------------------------------------------
# the two recipes
# ---------------------------------------------------------------------------------------------------------
def ours_worker(args) -> dict:
    from accelerate import Accelerator

    from flamingo_core.packing import pack_batch
    from flamingo_core.train import param_groups, train_step
    from flamingo_core.train.zero import build_adamw

    model, tok, vision = pair._ours(args.lm, args.every)
    optimizer = build_adamw(param_groups(model, 0.1), 1e-4, zero=False)
    accelerator = Accelerator(cpu=pair.DEVICE.type == "cpu", mixed_precision="bf16" if pair.PRECISION == "bf16" else "no")
    media_id, start_id = model.media_token_id, model.processor.doc_start_id or tok.eos_token_id
    sizes, state = parse_batch(args.batch), {"step": 0, "packing": []}
    model.train()

    def batches(step: int) -> dict:
        g = torch.Generator().manual_seed(step)
        out = {}
        for name, rows in samples(step, sizes).items():
            width = max(s["length"] for s in rows)
            slots = MAX_IMAGES if name == "m3w" else (0 if name == "vtp" else 1)
            batch = _tensors(rows, width, media_id, start_id, model.eoc_token_id, vision.image_size, slots, g)
            if name == "vtp":
                batch["media_frame_mask"] = torch.ones(len(rows), 1, FRAMES, dtype=torch.bool)
            if name != "m3w":
                batch = pack_batch(batch, WINDOW[name])
                state["packing"].append(batch.pop("packing"))
            out[name] = {k: v.to(pair.DEVICE) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return out

    def step():
        train_step(model, optimizer, batches(state["step"]), WEIGHTS, accelerator=accelerator, grad_clip=1.0)
        state["step"] += 1

    res = {"impl": "ours", **pair._measure_training(step, args.steps, args.turns)}
    res["packing_efficiency"] = statistics.mean(state["packing"]) if state["packing"] else None
    return res


def of_worker(args) -> dict:
    model, tok, vision = pair._openflamingo(args.lm, args.every)
    media_id, eoc_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<|endofchunk|>")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)  # its training script's optimizer
    sizes, state = parse_batch(args.batch), {"step": 0}
    if "vtp" in sizes:
        raise SystemExit("OpenFlamingo 2.0.1 has no video input (its vision encoder asserts a single frame): "
                         "leave vtp out of --batch")
    model.train()

    def step():
        g = torch.Generator().manual_seed(state["step"])
        for name, rows in samples(state["step"], sizes).items():
            # its MMC4 pipeline pads every document to 256 tokens and 5 images; its LAION one to the longest
            width = WINDOW[name] if name == "m3w" else max(s["length"] for s in rows)
            slots = MAX_IMAGES if name == "m3w" else (0 if name == "vtp" else 1)
            start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id  # same lengths as ours
            batch = _tensors(rows, width, media_id, start_id, eoc_id, vision.image_size, slots, g)
            media = batch["media"] * batch["media_mask"][:, :, None, None, None, None]  # zero images
            with pair._autocast():
                loss = model(vision_x=media.to(pair.DEVICE), lang_x=batch["input_ids"].to(pair.DEVICE),
                             attention_mask=batch["attention_mask"].to(pair.DEVICE),
                             labels=batch["labels"].to(pair.DEVICE)).loss
            (loss * WEIGHTS[name]).backward()  # one backward per dataset, as its train_one_epoch
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1

    return {"impl": "openflamingo", **pair._measure_training(step, args.steps, args.turns)}


WORKERS = {"ours": ours_worker, "openflamingo": of_worker}


def _worker_cmd(name: str, args) -> list[str]:
    return [sys.executable, __file__, "--worker", name, "--turns", "--lm", args.lm, "--every", str(args.every),
            "--steps", str(args.steps), "--batch", args.batch, "--device", args.device, "--vision", args.vision,
            "--precision", args.precision]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm", default="smollm2-135m", help="the frozen causal LM of both")
    p.add_argument("--vision", default="nano-minilm", help="the frozen vision tower of both (preset or export)")
    p.add_argument("--every", type=int, default=4, help="cross-attention every N decoder layers")
    p.add_argument("--batch", default=DEFAULT_BATCH, help="samples per source per step, NAME=N,...")
    p.add_argument("--steps", type=int, default=8, help="timed steps per implementation, in turns")
    p.add_argument("--device", default="cpu", help="torch device of both workers")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="fp32, or bf16 autocast")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--turns", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--log", type=Path, default=ROOT / "runs" / "bench_mixture_vs_openflamingo.log",
                   help="workers' stderr")
    args = p.parse_args(argv)
    pair.DEVICE, pair.VISION, pair.PRECISION = torch.device(args.device), args.vision, args.precision
    if args.worker:
        print("RESULT " + json.dumps(WORKERS[args.worker](args)), flush=True)
        return 0
    if not pair.openflamingo_peer.is_installed():
        print(f"run `{pair.openflamingo_peer.INSTALL_COMMAND}` first", file=sys.stderr)
        return 2
    sizes = parse_batch(args.batch)
    per_step = [real_tokens(samples(s, sizes)) for s in range(2, args.steps + 2)]  # the timed steps' (after 2 warm-up)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("w") as log:
        runs = pair._train_in_turns(list(WORKERS), args, log, _worker_cmd)  # its turn protocol
    results = []
    for name, res in runs.items():
        res = dict(res, real_tokens_per_step=per_step,
                   real_tokens_per_s=statistics.median(n / t for n, t in zip(per_step, res["step_s"])))
        other = next((r for o, r in runs.items() if o != name), None)
        if other is not None:  # the other's step time / this one's, turn by turn, then the median
            ratios = [a / b for a, b in zip(other["step_s"], res["step_s"])]
            res["paired_speedup"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k not in ("step_s", "real_tokens_per_step")}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json), "log": str(args.log)},
                                         "results": results}, indent=2))
    return 0 if len(runs) == len(WORKERS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
