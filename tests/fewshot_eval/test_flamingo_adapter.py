"""FlamingoEvalModel over a real (tiny, random) flamingo_core model: loading, prefix reuse equal to scoring
from scratch, cached visual tokens equal to encoding the pixels of every prompt, and a full run."""

import numpy as np
import pytest
import torch
from PIL import Image

fc = pytest.importorskip("flamingo_core")

from fewshot_eval.evaluate import evaluate  # noqa: E402
from fewshot_eval.model import FlamingoEvalModel, ModelLoadError  # noqa: E402
from fewshot_eval.prompts import Shot, build_prompt, get_template  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = fc.create_model("tiny")
    with torch.no_grad():  # open the gates so that images change the text (they start closed, at 0)
        for block in model.xattn_layers:
            block.alpha_xattn.fill_(1.0)
            block.alpha_dense.fill_(1.0)
    return model.save_pretrained(tmp_path_factory.mktemp("flamingo") / "model")


@pytest.fixture(scope="module")
def adapter(model_dir):
    return FlamingoEvalModel(model_dir, device="cpu")


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def _prompt(images, answers):
    demos = [Shot(im, a) for im, a in zip(images[:-1], answers)]
    return build_prompt(demos, Shot(images[-1]), get_template("classify"))


def test_unknown_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="not a Flamingo model folder"):
        FlamingoEvalModel(tmp_path)


def test_prefix_reuse_equals_scoring_each_continuation_from_scratch(adapter):
    prefix = _prompt(_images(3), ["red", "blue"])
    conts = [" red<EOC>", " blue<EOC>", " green square<EOC>"]
    reused = adapter.loglikelihood(prefix, conts)
    # from scratch: one forward pass over prefix + continuation, media from pixels (no visual-token cache)
    model, proc = adapter.model, adapter.processor
    batch = proc([prefix])
    for (lp, n), cont in zip(reused, conts):
        cont_ids = adapter.tokenizer(cont, add_special_tokens=False)["input_ids"]
        ids = torch.cat([batch["input_ids"], torch.tensor([cont_ids])], dim=1)
        with torch.no_grad():
            logits = model(ids, torch.ones_like(ids), media=batch["media"], media_mask=batch["media_mask"],
                           media_frame_mask=batch["media_frame_mask"]).logits  # fmt: skip
        logp = torch.log_softmax(logits[0, -len(cont_ids) - 1 : -1].float(), -1)
        expected = logp.gather(-1, torch.tensor(cont_ids)[:, None]).sum().item()
        assert n == len(cont_ids)
        assert lp == pytest.approx(expected, abs=1e-4)
    # the images matter (gates open), so the test above would see a wrong media placement
    other = adapter.loglikelihood(_prompt(_images(3, seed=1), ["red", "blue"]), conts)
    assert not np.allclose([x for x, _ in reused], [x for x, _ in other])


def test_cached_visual_tokens_equal_pixel_path(model_dir, adapter):
    uncached = FlamingoEvalModel(model_dir, device="cpu", cache_visual=False)
    imgs = _images(4, seed=2)
    prompts = [_prompt(imgs[:3], ["a", "b"]), _prompt([imgs[3], imgs[0]], ["c"])]
    assert adapter.generate(prompts, max_new_tokens=6, num_beams=1) == uncached.generate(prompts, 6, num_beams=1)
    a = adapter.loglikelihood(prompts[0], [" x<EOC>", " yz<EOC>"])
    b = uncached.loglikelihood(prompts[0], [" x<EOC>", " yz<EOC>"])
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-4)
    # a repeated image is encoded once
    n_before = len(adapter._visual_cache)
    adapter.generate([_prompt([imgs[0], imgs[1]], ["q"])], max_new_tokens=2, num_beams=1)
    assert len(adapter._visual_cache) == n_before


def test_prompt_longer_than_the_lm_is_a_clear_error(adapter):
    long_prompt = _prompt(_images(2), ["x" * (adapter.max_length + 10)])
    with pytest.raises(ValueError, match="exceeds the language model's"):
        adapter.generate([long_prompt], max_new_tokens=2)
    with pytest.raises(ValueError, match="exceeds the language model's"):
        adapter.loglikelihood(long_prompt, [" a<EOC>"])


def test_embed_images_are_normalised(adapter):
    emb = adapter.embed_images(_images(3))
    assert emb.shape[0] == 3 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_full_run_with_tiny_flamingo(adapter, coco_dir, classify_dir, tmp_path):
    cap = evaluate(adapter, "caption", coco_dir, shots=[0, 2], selection=["rices"], trials=1, limit=2,
                   max_new_tokens=4, out_dir=tmp_path / "cap", progress=False)  # fmt: skip
    assert len(cap) == 6 and all(r["n"] == 2 and np.isfinite(r["mean"]) for r in cap)  # 3 metrics x 2 shots
    cls = evaluate(adapter, "classify", classify_dir, shots=[2], selection=["rices"], ensemble=2, limit=3,
                   progress=False)  # fmt: skip
    assert {r["metric"] for r in cls} == {"top-1 accuracy"}  # 4 classes: top-5 would be 100% by construction
    assert cls[0]["chance"] == 25.0 and cls[0]["ci95"][0] <= cls[0]["mean"] <= cls[0]["ci95"][1]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_never_returns_an_empty_answer(adapter, monkeypatch, num_beams):
    """A model that would close its chunk at once still answers: the stop tokens are banned at the first step.
    Here every token but one is a stop token, so the first new token must be that one."""
    model = adapter.model
    keep = adapter.tokenizer(" r", add_special_tokens=False)["input_ids"][-1]
    stops = [i for i in range(model.vocab_size) if i not in (keep, model.media_token_id)]
    monkeypatch.setattr(type(model), "stop_token_ids", property(lambda self: stops))
    (out,) = adapter.generate([_prompt(_images(2), ["red"])], max_new_tokens=3, num_beams=num_beams)
    keep_text = adapter.tokenizer.decode([keep])
    assert out.startswith(keep_text) and out.replace(keep_text, "") == ""
