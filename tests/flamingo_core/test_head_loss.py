"""LinearHeadNLL against cross-entropy on the concatenated logits, outside the model."""

import pytest
import torch
import torch.nn.functional as F

from flamingo_core import head_loss
from flamingo_core.head_loss import LinearHeadNLL


@pytest.mark.parametrize("tile,chunk", [(1024, 64), (300, 7)])
def test_linear_head_nll_matches_cross_entropy_with_scaled_upstream_gradient(monkeypatch, tile, chunk):
    monkeypatch.setattr(head_loss, "VOCAB_TILE", tile)  # 300: four tiles of a 1000-row head, the last one short
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(1000, 32, generator=g)
    rows = torch.randn(2, 32, generator=g).requires_grad_(True)
    hidden = torch.randn(40, 32, generator=g).requires_grad_(True)
    targets = torch.randint(0, 1002, (40,), generator=g)
    targets[:3] = torch.tensor([1000, 1001, 999])  # both new tokens and the head's last id
    ref = F.cross_entropy(torch.cat([hidden @ weight.t(), hidden @ rows.t()], -1), targets, reduction="sum")
    ref_h, ref_r = torch.autograd.grad(3.0 * ref, [hidden, rows])
    loss = LinearHeadNLL.apply(hidden, targets, weight, chunk, rows)
    got_h, got_r = torch.autograd.grad(3.0 * loss, [hidden, rows])
    assert torch.allclose(loss, ref, rtol=1e-5)
    assert torch.allclose(got_h, ref_h, rtol=1e-4, atol=1e-5)
    assert torch.allclose(got_r, ref_r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("growing", [True, False])
def test_linear_head_nll_rescales_when_a_later_tile_holds_the_largest_logits(monkeypatch, growing):
    """Logits in the hundreds that grow (or shrink) from tile to tile: exp without the running maximum would
    overflow, and a sum not rescaled when the maximum moves would weigh the early tiles wrongly."""
    monkeypatch.setattr(head_loss, "VOCAB_TILE", 100)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(1000, 16, generator=g) * torch.linspace(1, 40, 1000)[:, None].flip(0 if not growing else -1)
    rows = torch.randn(2, 16, generator=g).requires_grad_(True)
    hidden = (4 * torch.randn(30, 16, generator=g)).requires_grad_(True)
    targets = torch.randint(0, 1002, (30,), generator=g)
    logits = torch.cat([hidden @ weight.t(), hidden @ rows.t()], -1)
    assert logits.abs().max() > 200  # exp(200) overflows fp32
    ref = F.cross_entropy(logits, targets, reduction="sum")
    ref_h, ref_r = torch.autograd.grad(ref, [hidden, rows])
    loss = LinearHeadNLL.apply(hidden, targets, weight, 1024, rows)
    got_h, got_r = torch.autograd.grad(loss, [hidden, rows])
    assert torch.isfinite(loss) and torch.allclose(loss, ref, rtol=1e-5)
    assert torch.allclose(got_h, ref_h, rtol=1e-4, atol=1e-4)
    assert torch.allclose(got_r, ref_r, rtol=1e-4, atol=1e-4)


def test_linear_head_nll_without_new_rows_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(50, 8, generator=g)
    hidden = torch.randn(6, 8, generator=g).requires_grad_(True)
    targets = torch.randint(0, 50, (6,), generator=g)
    ref = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    (ref_h,) = torch.autograd.grad(ref, [hidden])
    loss = LinearHeadNLL.apply(hidden, targets, weight, 4, weight.new_zeros(0, 8))
    (got_h,) = torch.autograd.grad(loss, [hidden])
    assert torch.allclose(loss, ref, rtol=1e-5) and torch.allclose(got_h, ref_h, rtol=1e-4, atol=1e-5)


def test_linear_head_nll_refuses_a_trainable_head():
    weight = torch.randn(10, 4, requires_grad=True)
    with pytest.raises(ValueError, match="must be frozen"):
        LinearHeadNLL.apply(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), weight, 8, torch.randn(2, 4))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "gpt_neox"])
def test_every_tested_lm_family_trains_through_linear_head_nll(arch):
    """The families the suite supports have a bias-free linear head, so training takes the fast path, and its
    loss and new-row gradients equal cross-entropy over the model's full logits."""
    from fc_helpers import TINY_LMS, make_model, set_gates

    torch.manual_seed(0)
    # the tiny GPT-2 config pads its vocabulary to 300 rows, which puts the new ids inside the head (the
    # ChunkedHeadNLL case); GPT-2 checkpoints have exactly the tokenizer's 50257 rows, as here 257
    model = make_model(arch, **({"lm_config": dict(TINY_LMS[arch], vocab_size=257)} if arch == "gpt2" else {}))
    set_gates(model, 0.5)
    assert model.linear_head_weight(torch.float32) is not None
    ids = torch.randint(0, model.lm_vocab_size, (2, 12))
    ids[:, 6] = model.eoc_token_id  # a new token among the targets
    logits = model(input_ids=ids).logits[:, :-1].flatten(0, 1)
    ref = F.cross_entropy(logits, ids[:, 1:].flatten(), reduction="sum")
    ref.backward()
    ref_grad = {n: p.grad.clone() for n, p in model.new_tokens.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids, loss_reduction="sum").loss  # every token a label
    loss.backward()
    assert torch.allclose(loss, ref, rtol=1e-5)
    for name, p in model.new_tokens.named_parameters():
        assert torch.allclose(p.grad, ref_grad[name], rtol=1e-4, atol=1e-6), name


def test_tiles_and_chunks_grow_off_the_cpu_only(monkeypatch):
    """The CPU keeps its measured cache-sized tiles; an accelerator gets products big enough to fill it. The
    training forward and LinearHeadNLL ask for the sizes of the device the hidden states are on."""
    from fc_helpers import make_model

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert head_loss.vocab_tile(cpu) == head_loss.VOCAB_TILE == 1024
    assert head_loss.default_chunks(cpu) == (head_loss.LINEAR_HEAD_CHUNK, head_loss.LOGITS_CHUNK) == (1024, 128)
    assert head_loss.vocab_tile(gpu) >= 8 * head_loss.vocab_tile(cpu)
    linear, logits = head_loss.default_chunks(gpu)
    assert linear >= 4 * head_loss.LINEAR_HEAD_CHUNK and logits >= 8 * head_loss.LOGITS_CHUNK

    import flamingo_core.flamingo as flamingo_module

    asked, chunks = [], []
    monkeypatch.setattr(head_loss, "vocab_tile", lambda device: asked.append(("tile", device)) or 7)
    monkeypatch.setattr(flamingo_module, "default_chunks", lambda device: asked.append(("chunks", device)) or (5, 3))
    apply = LinearHeadNLL.apply
    monkeypatch.setattr(flamingo_module.LinearHeadNLL, "apply", lambda *a: chunks.append(a[3]) or apply(*a))
    torch.manual_seed(0)
    model = make_model("llama")
    ids = torch.randint(0, model.lm_vocab_size, (2, 12))
    ref = F.cross_entropy(model(input_ids=ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
    loss = model(input_ids=ids, labels=ids, loss_reduction="sum").loss  # every token a label
    assert asked == [("chunks", cpu), ("tile", cpu)] and chunks == [5]  # 22 positions in passes of 5, tiles of 7
    assert torch.allclose(loss, ref, rtol=1e-5)
