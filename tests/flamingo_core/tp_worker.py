"""torchrun worker of test_tensor_parallel.py: for each LM family, one tiny Flamingo run whole (tensor parallel 1,
a copy on every process) and split over the processes (``parallelize_flamingo``), on the same inputs. Rank 0
writes the largest differences (logits, loss, every trained gradient), the generated tokens and the continuation
scores of both to the JSON file named by argv[1].

Usage: torchrun --nproc_per_node 2 tp_worker.py OUT.json llama gpt_neox qwen2
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from fc_helpers import TINY_LMS, diversify_lm, make_model, random_image, set_gates  # noqa: E402

from flamingo_core.data import make_labels  # noqa: E402
from flamingo_core.train.tensor_parallel import check_tensor_parallel, parallelize_flamingo  # noqa: E402

# a third family beside the tests' own: Qwen2 (biased q/k/v projections, grouped key/value heads)
LMS = dict(TINY_LMS, qwen2={"model_type": "qwen2", "vocab_size": 257, "hidden_size": 64, "intermediate_size": 128,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "max_position_embeddings": 512, "tie_word_embeddings": False,
                            "bos_token_id": 256, "eos_token_id": 256})


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _batch(model):
    samples = [[random_image(1), "a red circle.<EOC>", random_image(2), "two blue squares"],
               [random_image(3), "a green triangle on the left.<EOC>"]]
    enc = model.processor(samples, padding_side="right")
    enc["labels"] = make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
    return enc


def _run(model, batch):
    """(logits, summed loss, {name: full gradient}) of one forward and backward."""
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits.detach()
    loss = model(**inputs, labels=batch["labels"]).loss  # the mean NLL: gradients of order 1
    loss.backward()
    grads = {n: _full(p.grad).detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits, loss.detach(), grads


def _decode(model):
    prompt = model.processor([[random_image(4), "a"]], padding_side="left")
    with torch.no_grad():
        tokens = model.generate(prompt["input_ids"], prompt["attention_mask"], prompt["media"], max_new_tokens=8)
        beams = model.generate(prompt["input_ids"], prompt["attention_mask"], prompt["media"], max_new_tokens=6,
                               num_beams=3)
        scores = model.score_continuations(prompt["input_ids"][0], [[5, 6, 7], [8, 9]], media=prompt["media"])
    return tokens.tolist(), beams.tolist(), scores.logprobs.tolist()


def compare(arch: str, mesh) -> dict:
    torch.manual_seed(0)
    model = make_model(arch, lm_config=LMS[arch]) if LMS[arch] else make_model(arch)
    set_gates(model, 0.5)  # open gates: the cross-attention blocks shape the logits and get gradients
    model.fused_head_loss = False  # both take the head's gradient by autograd (the split model must)
    # a random LM at std 0.02 repeats one token: generation would agree trivially, so it decodes a redrawn copy
    talker = diversify_lm(copy.deepcopy(model))
    whole, talker_whole = copy.deepcopy(model), copy.deepcopy(talker)
    check_tensor_parallel(model, mesh.size(), dist.get_world_size(), fsdp=False)
    parallelize_flamingo(model, mesh)
    parallelize_flamingo(talker, mesh)
    batch = _batch(whole)
    ref_logits, ref_loss, ref_grads = _run(whole, batch)
    logits, loss, grads = _run(model, batch)
    held = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    return {
        "logits": float((logits - ref_logits).abs().max()), "logits_scale": float(ref_logits.abs().max()),
        "loss": abs(float(loss) - float(ref_loss)), "loss_value": float(ref_loss),
        "grads": max(float((grads[n] - ref_grads[n]).abs().max()) for n in ref_grads),
        "grad_rel": max(float((grads[n] - ref_grads[n]).abs().max() / ref_grads[n].abs().max().clamp(min=1e-12))
                        for n in ref_grads),
        "grad_scale": min(float(ref_grads[n].abs().max()) for n in ref_grads if "xattn" in n),
        "grad_names": sorted(set(grads) ^ set(ref_grads)),
        "decode": _decode(talker), "decode_whole": _decode(talker_whole),
        "held": held, "total": sum(p.numel() for p in whole.parameters()),
        "kv_local": list(model.xattn_layers[0].attn.to_kv.weight.to_local().shape),
    }


def main() -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {arch: compare(arch, mesh) for arch in sys.argv[2:]}
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
