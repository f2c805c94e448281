"""RowSplitLinear: the few-row (decoding) product split across threads equals F.linear, and is taken only then
(the decoding head too); the blocks share one media mask per LM call."""

import json

import pytest
import torch
import torch.nn.functional as F
from fc_helpers import make_model, random_image, set_gates

import flamingo_core.lm_adapter as lm_adapter
from flamingo_core.linear import FEW_ROWS, RowSplitLinear, row_split_linear


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def count_bmm(monkeypatch):
    calls = []
    real = torch.bmm

    def bmm(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "bmm", bmm)
    return calls


@pytest.mark.parametrize("shape", [(1, 12), (3, 1, 12), (2, 4, 12)])
@pytest.mark.parametrize("bias", [False, True])
def test_split_product_equals_linear(two_threads, monkeypatch, shape, bias):
    torch.manual_seed(0)
    layer = RowSplitLinear(12, 10, bias=bias).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    calls = count_bmm(monkeypatch)
    out = layer(x)
    assert calls == [(2, 5, 12)]  # the weight's 10 output rows as two blocks of 5, a view
    ref = F.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), [x, layer.weight])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, layer.weight])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_odd_widths_split_all_but_the_remainder(two_threads, monkeypatch):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 12, dtype=torch.float64), torch.randn(9, 12, dtype=torch.float64), torch.randn(9)
    calls = count_bmm(monkeypatch)
    out = row_split_linear(x, weight, bias.double())
    assert calls == [(2, 4, 12)]  # rows 0-7 as two blocks of 4; row 8 by F.linear
    torch.testing.assert_close(out, F.linear(x, weight, bias.double()), rtol=1e-12, atol=1e-12)


def test_many_rows_and_one_thread_take_linear(two_threads, monkeypatch):
    calls = count_bmm(monkeypatch)
    x_many = torch.randn(FEW_ROWS + 1, 12)
    torch.testing.assert_close(row_split_linear(x_many, torch.ones(10, 12)), F.linear(x_many, torch.ones(10, 12)))
    torch.set_num_threads(1)
    row_split_linear(torch.randn(1, 12), torch.ones(10, 12))
    assert calls == []


def test_same_state_dict_as_linear():
    layer = RowSplitLinear(6, 4)
    plain = torch.nn.Linear(6, 4)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(layer.state_dict())


def test_one_media_mask_per_lm_call(monkeypatch):
    model = make_model()  # several cross-attention blocks
    set_gates(model, 1.0)
    assert len(model.xattn_layers) > 1
    built = []
    real = lm_adapter.media_attention_mask
    monkeypatch.setattr(lm_adapter, "media_attention_mask", lambda *a: built.append(1) or real(*a))
    enc = model.processor([["A", random_image(1), "cat.<EOC>", random_image(2), "A dog"]])
    shared = model(**enc).logits
    assert len(built) == 1
    monkeypatch.setattr(lm_adapter.MediaContext, "media_mask", lambda self, *a: None)  # each block builds its own
    torch.testing.assert_close(model(**enc).logits, shared, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_decoding_head_takes_the_split_product(two_threads, monkeypatch, arch):
    model = make_model(arch)
    hidden = torch.randn(1, 1, model.lm.config.hidden_size)
    calls = count_bmm(monkeypatch)
    with torch.no_grad():
        exact = model.compute_logits(hidden)
        assert calls == []  # forward keeps the LM's own product (zero gates equal the frozen LM exactly)
        split = model.compute_logits(hidden, decoding=True)
    assert calls and calls[0][0] * calls[0][1] == model.lm_vocab_size // 2 * 2  # the head's rows, as blocks
    torch.testing.assert_close(split, exact, rtol=1e-5, atol=1e-5)


@pytest.fixture
def auto_policy(monkeypatch, tmp_path):
    """``SPLIT_POLICY = auto`` with an empty per-machine cache in tmp_path."""
    import flamingo_core.linear as linear

    monkeypatch.setattr(linear, "SPLIT_POLICY", "auto")
    monkeypatch.setattr(linear, "_decisions", {})
    monkeypatch.setattr(linear, "_loaded", False)
    monkeypatch.setenv("FLAMINGO_CACHE_DIR", str(tmp_path))
    return linear


def test_the_split_is_taken_only_where_the_measurement_on_this_machine_says_it_pays(auto_policy, monkeypatch,
                                                                                   two_threads):
    linear = auto_policy
    x, w = torch.randn(1, 32), torch.randn(64, 32)
    for pays in (False, True):
        monkeypatch.setattr(linear, "_decisions", {})
        monkeypatch.setattr(linear, "_measure", lambda weight, splits, pays=pays: pays)
        calls = count_bmm(monkeypatch)
        torch.testing.assert_close(row_split_linear(x, w), F.linear(x, w))
        assert bool(calls) == pays
    # the choice is cached per machine: a new process reads it instead of measuring again
    cached = json.loads((auto_policy._cache_file()).read_text())
    assert cached == {linear._machine(): {f"{tuple(w.shape)}|{w.dtype}|2 threads": True}}
    monkeypatch.setattr(linear, "_decisions", {})
    monkeypatch.setattr(linear, "_loaded", False)
    monkeypatch.setattr(linear, "_measure", lambda weight, splits: pytest.fail("measured again"))
    assert linear.split_pays(w, 2) is True


def test_a_forced_policy_never_measures(auto_policy, monkeypatch, two_threads):
    linear = auto_policy
    monkeypatch.setattr(linear, "_measure", lambda weight, splits: pytest.fail("measured"))
    x, w = torch.randn(1, 32), torch.randn(64, 32)
    for policy, expect_split in (("never", False), ("always", True)):
        monkeypatch.setattr(linear, "SPLIT_POLICY", policy)
        calls = count_bmm(monkeypatch)
        row_split_linear(x, w)
        assert bool(calls) == expect_split
    assert not (auto_policy._cache_file()).exists()


def test_the_measurement_runs_on_the_real_weight_and_gives_a_choice(auto_policy, two_threads):
    assert auto_policy._measure(torch.randn(256, 64), 2) in (True, False)
