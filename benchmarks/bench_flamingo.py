"""Speed and memory of the Flamingo model (flamingo_core), next to the frozen LM alone.

Measures, on one device:
- training step tokens/s and peak memory (batch 4 x 64 tokens, one image each; AdamW on the trainable parts),
  and full fine-tuning of the plain LM as a reference;
- generation ms/token (batch 1, two images in the prompt, exactly 20 new tokens, greedy and beam 3) with the
  media key/value cache, without it (keys/values recomputed at every step, as OpenFlamingo does), and the
  frozen LM alone (Hugging Face ``generate``) as the floor. Every setting runs once per round, over
  ``--repeats`` rounds, so a slow spell of a shared machine hits them alike; the ratios are medians of per-round
  ratios.

The OpenFlamingo 2.0.1 comparison is ``bench_vs_openflamingo.py`` (CPU, interleaved timing); this script also
runs on a GPU (``--device cuda``, bf16 autocast by default there).

Usage: python benchmarks/bench_flamingo.py [--device cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="flamingo_core model preset or JSON config (smollm2 = SmolLM2-135M)")
    p.add_argument("--vision-encoder", default="nano-minilm",
                   help="vision encoder name (contrastive_encoder preset/folder, or conv-tiny)")
    p.add_argument("--cross-attn-every", type=int, default=4, help="a GATED XATTN-DENSE every N LM layers")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="bf16 autocast (default on cuda) or fp32 (default on cpu)")
    p.add_argument("--batch", type=int, default=4, help="training batch size")
    p.add_argument("--seq", type=int, default=64, help="training tokens per sample")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--new-tokens", type=int, default=20, help="generated tokens per timed generation")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved rounds of every generation setting (medians are kept)")
    p.add_argument("--skip-train", action="store_true", help="measure generation only")
    p.add_argument("--skip-lm-finetune", action="store_true", help="skip the plain-LM fine-tuning reference")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process max RSS (Linux: KiB)


def train_batch(model, batch, seq, device, generator):
    size = model.vision_encoder.image_size
    media = torch.randn(batch, 1, 1, 3, size, size, generator=generator).to(device)
    ids = torch.randint(0, model.lm_vocab_size - 1, (batch, seq), generator=generator)
    ids[:, 0] = model.media_token_id
    ids[:, -1] = model.eoc_token_id
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    labels = ids.masked_fill(ids == model.media_token_id, -100)
    return dict(input_ids=ids, attention_mask=mask, media=media, labels=labels)


def bench_train(model, args, device, autocast):
    gen = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    batches = [train_batch(model, args.batch, args.seq, device, gen) for _ in range(2)]
    reset_peak(device)

    def step(b):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(2):
        step(batches[i % 2])
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.train_steps):
        step(batches[i % 2])
    sync(device)
    dt = time.perf_counter() - t0
    model.eval()
    return {"tokens_per_s": args.batch * args.seq * args.train_steps / dt, "peak_memory_mb": peak_mb(device),
            "trainable_params": sum(p.numel() for p in params)}


def bench_lm_finetune(lm, args, device, autocast):
    gen = torch.Generator().manual_seed(0)
    for p in lm.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-5)
    ids = torch.randint(0, lm.config.vocab_size, (args.batch, args.seq), generator=gen).to(device)
    reset_peak(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = lm(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    sync(device)
    dt = time.perf_counter() - t0
    for p in lm.parameters():
        p.requires_grad_(False)
    return {"tokens_per_s": args.batch * args.seq * args.train_steps / dt, "peak_memory_mb": peak_mb(device)}


def timed_once(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench_generate(model, args, device, autocast):
    from PIL import Image

    rng = torch.Generator().manual_seed(1)
    size = model.vision_encoder.image_size

    def image():
        return Image.fromarray((torch.rand(size, size, 3, generator=rng) * 255).to(torch.uint8).numpy())

    enc = model.processor([["Output: a photo.<EOC>", image(), "Output: a shape.<EOC>", image(), "Output:"]],
                          padding_side="left")
    enc = {k: (v.to(device) if v is not None else None) for k, v in enc.items()}
    n = args.new_tokens
    ids = torch.randint(0, model.lm_vocab_size - 1, enc["input_ids"].shape, generator=rng).to(device)

    def ours(beams, cache, k):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model.generate(**enc, max_new_tokens=k, num_beams=beams, use_media_cache=cache,
                                 min_new_tokens=k)  # stop tokens banned: exactly k tokens
        assert out.shape[1] == k

    def plain(beams, cache, k):  # the frozen LM alone, same prompt length, Hugging Face generate
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model.lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                                    num_beams=beams, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
        assert out.shape[1] == ids.shape[1] + k

    settings = [("media_cache", ours, True), ("no_media_cache", ours, False), ("plain_lm", plain, None)]
    calls = {}  # key -> (the whole call with n new tokens, the call with 1)
    for beams in (1, 3):
        for name, fn, cache in settings:
            key = f"{'greedy' if beams == 1 else 'beam3'}_{name}"
            calls[key] = tuple(lambda fn=fn, b=beams, c=cache, k=k: fn(b, c, k) for k in (n, 1))
    for total_call, first_call in calls.values():  # warm-up
        total_call()
        first_call()
    # rounds of every call in turn, so a slow spell of a shared machine hits every setting alike
    times = {key: ([], []) for key in calls}
    for _ in range(args.repeats):
        for key, (total_call, first_call) in calls.items():
            times[key][0].append(timed_once(total_call, device))
            times[key][1].append(timed_once(first_call, device))
    results = {}
    for key, (totals, firsts) in times.items():
        # ms/token over the whole call (prompt included, as the numbers) and per decoding step
        results[key + "_rounds"] = [1000 * t / n for t in totals]
        results[key] = statistics.median(results[key + "_rounds"])
        results[key + "_step"] = statistics.median(1000 * (t - f) / max(n - 1, 1) for t, f in zip(totals, firsts))
        log(f"{key}: {results[key]:.1f} ms/token, {results[key + '_step']:.1f} ms/step after the prompt")
    return results


def round_ratio(g: dict, key: str, base: str) -> float:
    """Median over rounds of (key's ms/token) / (base's ms/token in the same round)."""
    return statistics.median(a / b for a, b in zip(g[key + "_rounds"], g[base + "_rounds"]))


def main(argv=None) -> int:
    args = parse_args(argv)
    import flamingo_core as fc

    device = torch.device(args.device)
    autocast = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    torch.manual_seed(0)
    model = fc.create_model(args.model, vision_encoder=args.vision_encoder,
                            cross_attn_every=args.cross_attn_every).to(device).eval()
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": "bf16-autocast" if autocast else "fp32",
        "preset": args.model, "vision_encoder": args.vision_encoder, "cross_attn_every": args.cross_attn_every,
        "xattn_layers": len(model.xattn_layers), "lm_layers": model.lm.config.num_hidden_layers,
    }
    results = {"info": info}
    log(f"built model: {info}")
    results["generate_ms_per_token"] = bench_generate(model, args, device, autocast)
    if not args.skip_train:
        results["train_flamingo"] = bench_train(model, args, device, autocast)
        log(f"train flamingo: {results['train_flamingo']}")
    if not (args.skip_train or args.skip_lm_finetune):
        results["train_plain_lm_finetune"] = bench_lm_finetune(model.lm, args, device, autocast)
        log(f"train plain LM: {results['train_plain_lm_finetune']}")
    g = results["generate_ms_per_token"]
    results["ratios"] = {
        "greedy_vs_plain_lm": round_ratio(g, "greedy_media_cache", "greedy_plain_lm"),
        "greedy_step_vs_plain_lm_step": g["greedy_media_cache_step"] / g["greedy_plain_lm_step"],
        "beam3_step_vs_plain_lm_step": g["beam3_media_cache_step"] / g["beam3_plain_lm_step"],
        "beam3_vs_plain_lm": round_ratio(g, "beam3_media_cache", "beam3_plain_lm"),
        "greedy_no_media_cache_vs_plain_lm": round_ratio(g, "greedy_no_media_cache", "greedy_plain_lm"),
        "beam3_no_media_cache_vs_plain_lm": round_ratio(g, "beam3_no_media_cache", "beam3_plain_lm"),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
