"""Flamingo (this suite) side by side with OpenFlamingo 2.0.1 and the plain LM, on the same LM and vision features.

Measures:
  - training step: tokens/s and peak RSS, batch 4 x 64 tokens, one image per sequence, each implementation in
    its own process. Two memory figures: ``peak_rss_mb`` is the process's max RSS (model loading included), and
    ``train_peak_rss_mb`` the max RSS while training steps run (Linux: the high-water mark is reset through
    /proc/self/clear_refs after the models are built, so a loading transient does not count), with
    ``train_added_mb`` = that minus the RSS just before the first step. AdamW on what each implementation trains
    (OpenFlamingo: resampler, cross-attention and the whole tied embedding matrix, with the default AdamW its
    training script uses; ours: our trainer's ``train_step``). The training processes live side by side and
    take turns, one step each (the parent hands out the turn through their stdin, so only one computes at a
    time): step i of every implementation runs within a few seconds of the others, and a slow spell of the
    shared machine hits them alike. tokens/s comes from each implementation's median step; the speed ratios
    are medians of the per-turn ratios (``paired_speedup``);
  - generation: ms per new token, batch 1, two images in the prompt, 20 new tokens, greedy and beam 3
    (ours with and without the media key/value cache; ours with the split products chosen by the measurement on
    this machine (``flamingo_core.linear``, the default), and with each fixed choice: ``_split`` always,
    ``_no_split`` never, every product through ``F.linear``). All three models live
    in one process and their calls are interleaved over ``--gen-rounds`` rounds, so a slow spell of a shared
    machine hits all of them; the median call is reported, and the ratios to the plain LM are taken per round,
    then their median.

Setup (benchmark environment only): `bash benchmarks/peers/install_openflamingo.sh`, which puts OpenFlamingo
and the modules its import needs into benchmarks/.peer-site. ``peers/openflamingo_peer.py`` imports it from there
with the patches it needs on transformers 5 (shared with the tests), never in the packages.

On a GPU (``--device cuda``, fp32 like the CPU run) every model and batch lives on the device, timings wait for
it (``torch.cuda.synchronize``), and the training results add ``cuda_peak_mb`` (max allocated during the steps)
and ``cuda_added_mb`` (that minus what was allocated before them).

Usage: .venv/bin/python benchmarks/bench_vs_openflamingo.py [--lm smollm2-135m] [--every 4] [--steps 16] [--device cuda]
       [--batch 4 --seq 64] [--precision bf16] [--vision nano-minilm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
import openflamingo_peer  # noqa: E402  (benchmarks/peers: OpenFlamingo from the peer site, patched)

BATCH, SEQ, NEW_TOKENS = 4, 64, 20
DEVICE = torch.device("cpu")  # set from --device in each worker
PRECISION = "fp32"  # set from --precision in each worker: fp32, or bf16 autocast with fp32 parameters
VISION = "nano-minilm"  # set from --vision in each worker
PEAK_OVERRIDE = None  # --peak-tflops


def _autocast():
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=PRECISION == "bf16")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _vision():
    from contrastive_encoder.vision import load_vision_encoder

    torch.manual_seed(0)
    return load_vision_encoder(VISION)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb(field: str = "VmRSS") -> float | None:
    """Current (VmRSS) or high-water (VmHWM) resident set of this process in MB, from /proc (Linux only)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _time_steps(step, n: int, warmup: int = 2, turns: bool = False) -> list[float]:
    """Seconds of each of ``n`` calls after ``warmup`` untimed ones. With ``turns`` the warm-up and then each
    timed call wait for a line on stdin (the parent's go) and answer ``STEP ...`` on stdout when done."""

    def turn(body):
        if turns:
            sys.stdin.readline()
        result = body()
        if turns:
            print(f"STEP {result}", flush=True)
        return result

    def warm_up():
        for _ in range(warmup):
            step()
        return "warm-up"

    turn(warm_up)
    times = []
    for _ in range(n):
        times.append(turn(lambda: _timed(step)))
    return times


def _timed(fn) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _measure_training(step, n: int, turns: bool = False) -> dict:
    """Step times of ``n`` training steps and the memory figures of the module docstring."""
    rss_before = _rss_mb()
    reset = _reset_peak_rss()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats(DEVICE)
        cuda_before = torch.cuda.memory_allocated(DEVICE)
    step_s = _time_steps(step, n, turns=turns)
    train_peak = _rss_mb("VmHWM") if reset else None
    res = {"step_s": step_s, "peak_rss_mb": _peak_rss_mb(), "train_peak_rss_mb": train_peak,
           "train_added_mb": None if train_peak is None or rss_before is None else train_peak - rss_before}
    if DEVICE.type == "cuda":  # on a GPU the memory that counts is the device's
        peak = torch.cuda.max_memory_allocated(DEVICE)
        res.update(cuda_peak_mb=peak / 2**20, cuda_added_mb=(peak - cuda_before) / 2**20)
    res.update(_utilisation(step, statistics.median(step_s)))
    return res


# dense peak of one chip in TFLOP/s by (device name part, precision): the vendors' datasheet figures without
# sparsity (H100 / H200 SXM: 989 bf16, 495 TF32; fp32 without TF32, as torch runs fp32 matmuls by default: 67)
PEAK_TFLOPS = {("H100", "bf16"): 989.4, ("H200", "bf16"): 989.4, ("H100", "fp32"): 66.9, ("H200", "fp32"): 66.9,
               ("A100", "bf16"): 312.0, ("A100", "fp32"): 19.5}


def _peak_tflops() -> float | None:
    """``--peak-tflops`` when given, else the datasheet peak of this GPU at this precision, else None."""
    if PEAK_OVERRIDE:
        return PEAK_OVERRIDE
    if DEVICE.type != "cuda":
        return None
    name = torch.cuda.get_device_name(DEVICE)
    return next((v for (part, prec), v in PEAK_TFLOPS.items() if part in name and prec == PRECISION), None)


def _utilisation(step, median_s: float) -> dict:
    """FLOPs of one more step as torch counts them (``FlopCounterMode``: every matmul, convolution and attention
    product, forward and backward, the optimizer's element-wise work not counted), the achieved TFLOP/s at the
    median step time, and the model FLOPs utilisation (MFU) against ``_peak_tflops`` where one is known."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    achieved = flops / median_s / 1e12
    peak = _peak_tflops()
    return {"flops_per_step": flops, "achieved_tflops": achieved, "peak_tflops": peak,
            "mfu": None if peak is None else achieved / peak}


# ---------------------------------------------------------------------------------------------------------
# OpenFlamingo
# ---------------------------------------------------------------------------------------------------------
def _openflamingo(lm_name: str, every: int):
    openflamingo_peer.import_openflamingo()
    from open_flamingo.src.flamingo import Flamingo as OFFlamingo
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin
    from open_flamingo.src.utils import extend_instance

    from contrastive_encoder.shared.pretrained import load_causal_lm, load_tokenizer

    vision = _vision()

    class VisualStub(torch.nn.Module):
        """OpenFlamingo expects vision_encoder.visual(x)[1] = (N, S, d) tokens."""

        def __init__(self):
            super().__init__()
            self.enc = vision

        def forward(self, x):
            feats = self.enc(x)  # (N, 1, S, d)
            return None, feats[:, 0]

    holder = torch.nn.Module()
    holder.visual = VisualStub()
    tok = load_tokenizer(lm_name)
    tok.add_special_tokens({"additional_special_tokens": ["<|endofchunk|>", "<image>"]})
    lm = load_causal_lm(lm_name)
    extend_instance(lm, FlamingoLMMixin)
    lm.set_decoder_layers_attr_name("model.layers")
    torch.manual_seed(0)
    lm.resize_token_embeddings(len(tok))
    model = OFFlamingo(
        holder, lm, tok.convert_tokens_to_ids("<|endofchunk|>"), tok.convert_tokens_to_ids("<image>"),
        vis_dim=vision.feature_dim, cross_attn_every_n_layers=every,
    ).to(DEVICE)
    model.requires_grad_(False)
    model.perceiver.requires_grad_(True)
    model.lang_encoder.gated_cross_attn_layers.requires_grad_(True)
    model.lang_encoder.get_input_embeddings().requires_grad_(True)
    return model, tok, vision


def _train_bench(impl: str, model, media_id: int, image_size: int, forward, args) -> dict:
    """Time AdamW steps on what ``model`` trains; ``forward(ids, mask, pixels, labels)`` returns the loss, or None
    when it took the optimizer step itself (our trainer)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (BATCH, SEQ), generator=g)
    ids[:, 0] = media_id
    pixels = torch.randn(BATCH, 1, 1, 3, image_size, image_size, generator=g)  # (B, N_media, T, C, H, W)
    labels = ids.clone()
    labels[:, 0] = -100
    ids, pixels, labels = ids.to(DEVICE), pixels.to(DEVICE), labels.to(DEVICE)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)  # the peers' training scripts use the default AdamW
    model.train()

    def step():
        # our trainer's step (``impl`` ours) brings its own autocast, accelerate's, around the forward pass only
        with _autocast() if impl != "ours" else contextlib.nullcontext():
            loss = forward(ids, torch.ones_like(ids), pixels, labels)
        if loss is None:  # ``forward`` ran a whole trainer step itself
            return
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"impl": impl, "what": "train", "trainable": sum(p.numel() for p in params),
            **_measure_training(step, args.steps, args.turns)}


def of_train(args) -> dict:
    model, tok, vision = _openflamingo(args.lm, args.every)
    return _train_bench("openflamingo", model, tok.convert_tokens_to_ids("<image>"), vision.image_size,
                        lambda ids, mask, px, labels: model(vision_x=px, lang_x=ids, attention_mask=mask,
                                                           labels=labels).loss, args)


def of_generate_calls(args) -> dict:
    model, tok, vision = _openflamingo(args.lm, args.every)
    model.eval()
    prompt = "<image>Output: a red circle.<|endofchunk|><image>Output:"
    ids = tok(prompt, return_tensors="pt")["input_ids"].to(DEVICE)
    pixels = torch.randn(1, 2, 1, 3, vision.image_size, vision.image_size,
                         generator=torch.Generator().manual_seed(0)).to(DEVICE)

    def call(beams):
        def run():
            with torch.no_grad():
                out = model.generate(vision_x=pixels, lang_x=ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams,
                                     do_sample=False)
            assert out.shape[1] - ids.shape[1] == NEW_TOKENS, out.shape
        return run

    return {f"openflamingo/beam{b}": call(b) for b in (1, 3)}


# ---------------------------------------------------------------------------------------------------------
# the plain LM (the floor)
# ---------------------------------------------------------------------------------------------------------
def lm_train(args) -> dict:
    from contrastive_encoder.shared.pretrained import load_causal_lm

    lm = load_causal_lm(args.lm).to(DEVICE).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (BATCH, SEQ), generator=g).to(DEVICE)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-5)

    def step():
        with _autocast():
            loss = lm(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"impl": "plain-lm", "what": "train (full fine-tuning)", **_measure_training(step, args.steps, args.turns)}


def lm_generate_calls(args) -> dict:
    from contrastive_encoder.shared.pretrained import load_causal_lm, load_tokenizer

    lm, tok = load_causal_lm(args.lm).to(DEVICE), load_tokenizer(args.lm)
    ids = tok("An image of a red circle. Output: a red circle. An image. Output:", return_tensors="pt")["input_ids"]
    ids = ids.to(DEVICE)

    def call(beams):
        def run():
            with torch.no_grad():
                out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                  min_new_tokens=NEW_TOKENS, num_beams=beams, do_sample=False)
            assert out.shape[1] - ids.shape[1] == NEW_TOKENS
        return run

    return {f"plain-lm/beam{b}": call(b) for b in (1, 3)}


# ---------------------------------------------------------------------------------------------------------
# this suite
# ---------------------------------------------------------------------------------------------------------
def _ours(lm_name: str, every: int):
    from contrastive_encoder.shared.pretrained import load_causal_lm, load_tokenizer
    from flamingo_core import create_model

    vision = _vision()
    torch.manual_seed(0)
    model = create_model("smollm2", lm=load_causal_lm(lm_name), tokenizer=load_tokenizer(lm_name),
                         vision_encoder=vision, cross_attn_every=every).to(DEVICE)
    return model, model.tokenizer, vision


def ours_train(args) -> dict:
    """Our trainer's own step (``flamingo_core.train.train_step``: logits at label positions only, fused AdamW
    from ``build_adamw``), on the same batch as the others."""
    from accelerate import Accelerator

    from flamingo_core.train import param_groups, train_step
    from flamingo_core.train.zero import build_adamw

    model, tok, vision = _ours(args.lm, args.every)
    optimizer = build_adamw(param_groups(model, 0.1), 1e-4, zero=False)
    accelerator = Accelerator(cpu=DEVICE.type == "cpu", mixed_precision="bf16" if PRECISION == "bf16" else "no")

    def forward(ids, mask, px, labels):
        batch = {"input_ids": ids, "attention_mask": mask, "media": px, "labels": labels}
        train_step(model, optimizer, {"bench": batch}, {"bench": 1.0}, accelerator=accelerator, grad_clip=0)
        return None

    return _train_bench("ours", model, tok.convert_tokens_to_ids("<image>"), vision.image_size, forward, args)


def ours_generate_calls(args) -> dict:
    model, tok, vision = _ours(args.lm, args.every)
    model.eval()
    ids = tok("<image>Output: a red circle.<EOC><image>Output:", return_tensors="pt")["input_ids"].to(DEVICE)
    pixels = torch.randn(1, 2, 1, 3, vision.image_size, vision.image_size,
                         generator=torch.Generator().manual_seed(0)).to(DEVICE)

    import flamingo_core.linear as linear

    def call(beams, cache, split="auto"):
        def run():
            policy = linear.SPLIT_POLICY
            linear.SPLIT_POLICY = split  # auto: the choice measured on this machine; always / never: fixed
            try:
                out = model.generate(ids, torch.ones_like(ids), pixels, max_new_tokens=NEW_TOKENS,
                                     min_new_tokens=NEW_TOKENS, num_beams=beams, use_media_cache=cache)
            finally:
                linear.SPLIT_POLICY = policy
            assert out.shape[-1] >= NEW_TOKENS, out.shape
        return run

    calls = {f"ours/beam{b}" + ("" if cache else "_no_media_cache"): call(b, cache)
             for cache in (True, False) for b in (1, 3)}
    calls.update({f"ours/beam{b}_{name}": call(b, True, split=policy) for b in (1, 3)
                  for name, policy in (("split", "always"), ("no_split", "never"))})
    return calls


def generate_all(args) -> dict:
    """All generation calls in one process, interleaved over ``args.gen_rounds`` rounds."""

    calls = {**lm_generate_calls(args), **of_generate_calls(args), **ours_generate_calls(args)}
    for run in calls.values():  # warm-up
        run()
    times = {name: [] for name in calls}
    for _ in range(args.gen_rounds):
        for name, run in calls.items():
            times[name].append(1000 * _timed(run) / NEW_TOKENS)
    res = {"what": "generate", "ms_per_token_median": {n: statistics.median(t) for n, t in times.items()},
           "ms_per_token_all": times, "ratio_to_plain_lm_median": {}}
    for name, t in times.items():
        base = times["plain-lm/" + name.split("/")[1].split("_")[0]]
        res["ratio_to_plain_lm_median"][name] = statistics.median(a / b for a, b in zip(t, base))
    res["peak_rss_mb"] = _peak_rss_mb()
    return res


WORKERS = {"lm-train": lm_train, "of-train": of_train, "ours-train": ours_train, "generate": generate_all}


def _run_worker(name: str, args, log) -> dict | None:
    """Run one worker process to completion (generation)."""
    proc = subprocess.run(_worker_cmd(name, args), stdout=subprocess.PIPE, stderr=log, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[0][7:]) if proc.returncode == 0 and line else None


def _worker_cmd(name: str, args, turns: bool = False) -> list[str]:
    return [sys.executable, __file__, "--worker", name, "--lm", args.lm, "--every", str(args.every),
            "--steps", str(args.steps), "--gen-rounds", str(args.gen_rounds), "--device", args.device,
            "--vision", args.vision, "--batch", str(args.batch), "--seq", str(args.seq),
            "--precision", args.precision] + (["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []) + (
                ["--turns"] if turns else [])


def _train_in_turns(names: list[str], args, log, worker_cmd=None) -> dict[str, dict]:
    """Start every training worker, then hand out turns: the warm-up, then one step at a time, round-robin.
    ``worker_cmd(name, args)``: another script's worker command line (default this script's, with ``--turns``)."""
    worker_cmd = worker_cmd or (lambda n, a: _worker_cmd(n, a, turns=True))
    alive = {n: subprocess.Popen(worker_cmd(n, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, text=True) for n in names}

    def answer(proc) -> str | None:  # the next protocol line (STEP / RESULT); None when the worker died
        for line in proc.stdout:
            if line.startswith(("STEP ", "RESULT ")):
                return line
        return None

    for turn in range(args.steps + 1):  # turn 0: the warm-up steps
        for i in range(len(names)):
            name = names[(i + turn) % len(names)]  # rotate who goes first
            if name not in alive:
                continue
            alive[name].stdin.write("go\n")
            alive[name].stdin.flush()
            if answer(alive[name]) is None:
                print(f"{name} failed (see the log)", file=sys.stderr)
                del alive[name]
    results = {}
    for name, proc in alive.items():
        line = answer(proc)
        proc.wait()
        if line and line.startswith("RESULT "):
            results[name] = json.loads(line[7:])
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm", default="smollm2-135m", help="causal LM for every implementation")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training: fp32, or bf16 autocast with fp32 parameters for every implementation")
    p.add_argument("--batch", type=int, default=4, help="training sequences per step")
    p.add_argument("--seq", type=int, default=64, help="training tokens per sequence")
    p.add_argument("--vision", default="nano-minilm", help="vision encoder of every implementation (preset or export)")
    p.add_argument("--every", type=int, default=4, help="cross-attention every N decoder layers")
    p.add_argument("--steps", type=int, default=16, help="timed training steps per implementation, in turns")
    p.add_argument("--gen-rounds", type=int, default=9, help="interleaved rounds of every generate call")
    p.add_argument("--only", nargs="*", default=list(WORKERS), help="workers to run")
    p.add_argument("--device", default="cpu", help="torch device of every worker (cuda: fp32, CUDA peak memory too)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the chip's dense peak TFLOP/s at --precision for the MFU figure (default: known GPUs' datasheet)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--turns", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--log", type=Path, default=ROOT / "runs" / "bench_vs_openflamingo.log", help="workers' stderr")
    args = p.parse_args(argv)
    global DEVICE, VISION, BATCH, SEQ, PRECISION, PEAK_OVERRIDE
    DEVICE, VISION, BATCH, SEQ = torch.device(args.device), args.vision, args.batch, args.seq
    PRECISION, PEAK_OVERRIDE = args.precision, args.peak_tflops
    if args.worker:
        print("RESULT " + json.dumps(WORKERS[args.worker](args)), flush=True)
        return 0
    if not openflamingo_peer.is_installed():
        print(f"run `{openflamingo_peer.INSTALL_COMMAND}` first", file=sys.stderr)
        return 2

    train_workers = [w for w in args.only if w.endswith("-train")]
    results = []
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("w") as log:
        runs = _train_in_turns(train_workers, args, log) if train_workers else {}
        gen = _run_worker("generate", args, log) if "generate" in args.only else None
    for name in train_workers:
        if name not in runs:
            continue
        res = dict(runs[name])
        res["tokens_per_s"] = BATCH * SEQ / statistics.median(res["step_s"])
        others = {o: runs[o]["step_s"] for o in train_workers if o != name and o in runs}
        # speedup over each other implementation: their step time / ours, turn by turn, then the median
        res["paired_speedup"] = {o: statistics.median(a / b for a, b in zip(t, res["step_s"]))
                                 for o, t in others.items()}
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "step_s"}), flush=True)
    if gen is not None:
        results.append(gen)
        print(json.dumps({"ms_per_token_median": gen["ms_per_token_median"],
                          "ratio_to_plain_lm_median": gen["ratio_to_plain_lm_median"]}), flush=True)
    elif "generate" in args.only:
        print(f"generate failed (see {args.log})", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
