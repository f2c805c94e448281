"""The held-out evaluation during training: caption loss, greedy captions, task probes on them and the spread of the
visual tokens across images."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from flamingo_core.data import EOC
from flamingo_core.mixture import token_nll


def load_probe(spec: str) -> Callable[[list[str], list[dict]], dict[str, float]]:
    """``--eval-probe MODULE:FUNCTION`` or ``FILE.py:FUNCTION``: a task probe scoring the held-out greedy
    captions, ``probe(texts, records) -> {metric: value}`` (e.g. ``tools/shapesworld/probes.py:colour_probe``,
    the fraction of captions naming the main object's colour). The user's own code, named on their command line,
    so it is imported like any module they would run."""
    import importlib
    import importlib.util

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"--eval-probe {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise FileNotFoundError(f"--eval-probe {spec!r}: no file {where}")
            module_spec = importlib.util.spec_from_file_location(f"_flamingo_probe_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as e:
        raise ValueError(f"--eval-probe {spec!r}: cannot import {where} ({e})") from e
    probe = getattr(module, name, None)
    if not callable(probe):
        raise ValueError(f"--eval-probe {spec!r}: {where} has no function {name}")
    return probe


@torch.no_grad()
def visual_token_spread(model, media: torch.Tensor) -> float:
    """How much the resampler's output differs between images: the std across the batch of each visual-token
    feature, averaged. Near 0 means every image gets the same tokens (a collapsed resampler, which the LM can
    only use as a bias); compare with the value at initialisation.

    Args:
        model: a ``Flamingo`` (``encode_media``).
        media: (B, N, T, C, H, W) pixels; the first medium of each sample is used. B >= 2.
    """
    tokens = model.encode_media(media[:, :1].to(model.device))  # (B, 1, R, d)
    return float(tokens.float().std(dim=0).mean())


@torch.no_grad()
def caption_eval(model, processor, source, num_samples: int, num_captions: int, batch_size: int,
                 device, rank: int = 0, world_size: int = 1, generate: bool = True,
                 probes: Sequence[Callable] = (), lockstep: bool = False) -> dict[str, Any]:
    """Held-out caption loss (token mean over ``<image>caption<EOC>``) and greedy captions.

    The loss is computed on every process over its shard (sums all-reduced by the caller through the returned
    ``loss_sum`` / ``loss_count``). ``probes`` (``load_probe``) score the greedy captions of the first
    ``num_samples`` images against their records; their metrics join the result. ``visual_std`` is
    ``visual_token_spread`` over up to 16 of the held-out images. ``lockstep`` (FSDP, whose forward is a
    collective): every process runs as many loss batches as the process with the most, the extra ones uncounted.
    """
    from flamingo_core.data import make_labels

    model_was_training = model.training
    model.eval()
    n = min(num_samples, len(source))
    loaded = [source.load(i, random.Random(i)) for i in range(n)]
    good = [x for x in loaded if isinstance(x, tuple)]
    bad = [x for x in loaded if not isinstance(x, tuple)]  # SkippedSample: corrupt or missing media
    if n and not good:  # a loss of 0 over no tokens would read as a perfect model
        raise ValueError(f"held-out data: none of its first {n} samples is readable (first: {bad[0].where}: "
                         f"{bad[0].reason}); fix --eval-data, or give --no-eval")
    mine = good[rank::world_size]
    loss_sum, loss_count = 0.0, 0
    media_id = processor.media_token_id
    batches = -(-len(good[0::world_size]) // batch_size) if lockstep else -(-len(mine) // batch_size)
    for i in range(batches):
        chunk = mine[i * batch_size: (i + 1) * batch_size]
        counted = bool(chunk)
        chunk = chunk or good[:batch_size]  # lockstep: a forward whose loss is not counted
        enc = processor([items for items, _ in chunk], padding_side="right")
        enc = {k2: (v.to(device) if torch.is_tensor(v) else v) for k2, v in enc.items()}
        labels = make_labels(enc["input_ids"], enc["attention_mask"], [media_id])
        s, c = token_nll(model, dict(enc, labels=labels))
        if counted:
            loss_sum, loss_count = loss_sum + float(s), loss_count + int(c)
    result: dict[str, Any] = {"loss_sum": loss_sum, "loss_count": loss_count, "skipped": len(bad)}
    if generate and rank == 0 and hasattr(model, "encode_media") and len(good) >= 2:  # not under FSDP (sharded)
        enc = processor([[items[0]] for items, _ in good[:16]])
        if enc.get("media") is not None:
            result["visual_std"] = visual_token_spread(model, enc["media"])
    if generate and rank == 0 and hasattr(model, "generate"):
        gen_set = good if probes else good[:num_captions]
        texts, metas = [], []
        for k in range(0, len(gen_set), batch_size):
            chunk = gen_set[k: k + batch_size]
            enc = processor([[items[0]] for items, _ in chunk], padding_side="left")
            new = model.generate(enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                 enc["media"].to(device), max_new_tokens=16)
            texts += processor.decode(new)
            metas += [meta for _, meta in chunk]
        result["captions"] = [{"reference": items[1].replace(EOC, ""), "generated": text}
                              for (items, _), text in zip(gen_set[:num_captions], texts)]
        for probe in probes:
            result.setdefault("probes", {}).update(probe(texts, metas))
    model.train(model_was_training)
    return result


class HeldOutEvaluation:
    """The held-out evaluation of a run, as the loop calls it: ``evaluate(step) -> record`` (collective: the
    loss is all-reduced; captions and the probes' metrics come from the main process). Logs and prints its record.
    """

    def __init__(self, cfg, accelerator, model, processor, source, source_skipped, path: str, logger,
                 fsdp: bool):
        self.cfg, self.acc, self.model, self.processor = cfg, accelerator, model, processor
        self.source, self.source_skipped, self.path, self.logger, self.fsdp = source, source_skipped, path, logger, fsdp
        self.noted_skips = False  # say it once, not at every evaluation
        self.probes = [load_probe(spec) for spec in cfg.eval_probes]

    def __call__(self, step: int) -> dict[str, Any]:
        import json

        if self.source is None:
            return {}
        cfg, acc = self.cfg, self.acc
        model = self.model if self.fsdp else acc.unwrap_model(self.model)
        r = caption_eval(model, self.processor, self.source, cfg.eval_samples, cfg.num_captions, cfg.batch_size,
                         acc.device, acc.process_index, acc.num_processes, generate=not self.fsdp,
                         probes=self.probes, lockstep=self.fsdp)
        tot = torch.tensor([r["loss_sum"], r["loss_count"]], dtype=torch.float64, device=acc.device)
        tot = acc.reduce(tot, reduction="sum") if acc.num_processes > 1 else tot
        out = {"eval_loss": float(tot[0] / max(tot[1], 1))}
        out.update({k: r[k] for k in ("visual_std", "captions") if k in r})
        out.update(r.get("probes", {}))
        if acc.is_main_process:
            if (r["skipped"] or sum(self.source_skipped.values())) and not self.noted_skips:
                self.noted_skips = True
                acc.print(f"note: held-out data {self.path}: {r['skipped']} of the first {cfg.eval_samples} samples "
                          f"have unreadable media; rows skipped when read: {self.source_skipped.report()}")
            self.logger.log(step, **{k: v for k, v in out.items() if k != "captions"},
                            captions=json.dumps(out.get("captions", [])))
            acc.print(f"step {step}: held-out caption loss {out['eval_loss']:.4f}"
                      + "".join(f", {k} {v:.4g}" for k, v in r.get("probes", {}).items())
                      + (f", visual tokens' std across images {out['visual_std']:.3f}" if "visual_std" in out else ""))
            for c in out.get("captions", [])[:cfg.num_captions]:
                acc.print(f"  ref: {c['reference']!r}\n  gen: {c['generated']!r}")
        acc.wait_for_everyone()
        return out
