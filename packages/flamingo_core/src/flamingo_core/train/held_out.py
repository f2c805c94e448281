"""The held-out evaluation during training: caption loss, greedy captions, the colour probe and the spread of the
visual tokens across images."""

from __future__ import annotations

import random
from typing import Any

import torch

from flamingo_core.data import EOC
from flamingo_core.mixture import token_nll


def _colour_words(records: list[dict]) -> list[str]:
    colours = {o.get("colour") for r in records for o in (r.get("scene") or {}).get("objects", [])}
    return sorted(c for c in colours if c)


def first_colour(text: str, colours: list[str]) -> str | None:
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    return next((w for w in words if w in colours), None)


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
                 device, rank: int = 0, world_size: int = 1, generate: bool = True) -> dict[str, Any]:
    """Held-out caption loss (token mean over ``<image>caption<EOC>``) and greedy captions.

    The loss is computed on every process over its shard (sums all-reduced by the caller through the returned
    ``loss_sum`` / ``loss_count``). Greedy captions of the first ``num_samples`` images give ``colour_acc``:
    the fraction whose first colour word is the main object's colour (``scene.objects[0].colour``).
    ``visual_std`` is ``visual_token_spread`` over up to 16 of the held-out images.
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
    for k in range(0, len(mine), batch_size):
        chunk = mine[k: k + batch_size]
        enc = processor([items for items, _ in chunk], padding_side="right")
        enc = {k2: (v.to(device) if torch.is_tensor(v) else v) for k2, v in enc.items()}
        labels = make_labels(enc["input_ids"], enc["attention_mask"], [media_id])
        s, c = token_nll(model, dict(enc, labels=labels))
        loss_sum, loss_count = loss_sum + float(s), loss_count + int(c)
    result: dict[str, Any] = {"loss_sum": loss_sum, "loss_count": loss_count, "skipped": len(bad)}
    if generate and rank == 0 and hasattr(model, "encode_media") and len(good) >= 2:  # not under FSDP (sharded)
        enc = processor([[items[0]] for items, _ in good[:16]])
        if enc.get("media") is not None:
            result["visual_std"] = visual_token_spread(model, enc["media"])
    if generate and rank == 0 and hasattr(model, "generate"):
        colours = _colour_words([m for _, m in good])
        samples, correct, judged = [], 0, 0
        gen_set = good if colours else good[:num_captions]
        for k in range(0, len(gen_set), batch_size):
            chunk = gen_set[k: k + batch_size]
            enc = processor([[items[0]] for items, _ in chunk], padding_side="left")
            new = model.generate(enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                 enc["media"].to(device), max_new_tokens=16)
            texts = processor.decode(new)
            for (items, meta), text in zip(chunk, texts):
                ref = items[1].replace(EOC, "")
                if len(samples) < num_captions:
                    samples.append({"reference": ref, "generated": text})
                objects = (meta.get("scene") or {}).get("objects") or []
                if colours and objects and objects[0].get("colour"):
                    judged += 1
                    correct += first_colour(text, colours) == objects[0]["colour"]
        result["captions"] = samples
        if judged:
            result["colour_acc"] = correct / judged
            result["colour_judged"] = judged
    model.train(model_was_training)
    return result


class HeldOutEvaluation:
    """The held-out evaluation of a run, as the loop calls it: ``evaluate(step) -> record`` (collective: the
    loss is all-reduced; captions and the colour probe come from the main process). Logs and prints its record.
    """

    def __init__(self, cfg, accelerator, model, processor, source, source_skipped, path: str, logger,
                 fsdp: bool):
        self.cfg, self.acc, self.model, self.processor = cfg, accelerator, model, processor
        self.source, self.source_skipped, self.path, self.logger, self.fsdp = source, source_skipped, path, logger, fsdp
        self.noted_skips = False  # say it once, not at every evaluation

    def __call__(self, step: int) -> dict[str, Any]:
        import json

        if self.source is None:
            return {}
        cfg, acc = self.cfg, self.acc
        model = self.model if self.fsdp else acc.unwrap_model(self.model)
        r = caption_eval(model, self.processor, self.source, cfg.eval_samples, cfg.num_captions, cfg.batch_size,
                         acc.device, acc.process_index, acc.num_processes, generate=not self.fsdp)
        tot = torch.tensor([r["loss_sum"], r["loss_count"]], dtype=torch.float64, device=acc.device)
        tot = acc.reduce(tot, reduction="sum") if acc.num_processes > 1 else tot
        out = {"eval_loss": float(tot[0] / max(tot[1], 1))}
        out.update({k: r[k] for k in ("colour_acc", "visual_std", "captions") if k in r})
        if acc.is_main_process:
            if (r["skipped"] or sum(self.source_skipped.values())) and not self.noted_skips:
                self.noted_skips = True
                acc.print(f"note: held-out data {self.path}: {r['skipped']} of the first {cfg.eval_samples} samples "
                          f"have unreadable media; rows skipped when read: {self.source_skipped.report()}")
            self.logger.log(step, **{k: v for k, v in out.items() if k != "captions"},
                            captions=json.dumps(out.get("captions", [])))
            acc.print(f"step {step}: held-out caption loss {out['eval_loss']:.4f}"
                      + (f", colour accuracy {out['colour_acc']:.1%}" if "colour_acc" in out else "")
                      + (f", visual tokens' std across images {out['visual_std']:.3f}" if "visual_std" in out else ""))
            for c in out.get("captions", [])[:cfg.num_captions]:
                acc.print(f"  ref: {c['reference']!r}\n  gen: {c['generated']!r}")
        acc.wait_for_everyone()
        return out
