"""The packaged SmolLM2-135M as the frozen LM: zero gates leave its logits unchanged for any images."""

import pytest
import torch
from fc_helpers import random_image

import flamingo_core as fc

pytestmark = pytest.mark.pretrained


@pytest.fixture(scope="module")
def smol():
    try:
        return fc.create_model("smollm2", vision_encoder="conv-tiny")
    except Exception as e:  # the packaged model is missing in this environment
        pytest.skip(f"SmolLM2 not available: {e}")


def test_zero_gates_equal_frozen_smollm2(smol):
    assert smol.xattn_layer_indices == list(range(3, smol.lm.config.num_hidden_layers, 4))
    tok = smol.tokenizer
    assert tok.pad_token_id is not None
    samples_a = [["Here is a picture:", random_image(1), "It shows a"], ["Two:", random_image(2), "and", random_image(3)]]
    samples_b = [["Here is a picture:", random_image(4), "It shows a"], ["Two:", random_image(5), "and", random_image(6)]]
    enc_a, enc_b = smol.processor(samples_a), smol.processor(samples_b)
    with torch.no_grad():
        logits_a, logits_b = smol(**enc_a).logits, smol(**enc_b).logits
        pos = fc.flamingo.position_ids_from_mask(enc_a["attention_mask"])
        ref = smol.lm(inputs_embeds=smol.embed_tokens(enc_a["input_ids"]), attention_mask=enc_a["attention_mask"],
                      position_ids=pos).logits
        ids = tok(["The capital of France is"], return_tensors="pt")["input_ids"]
        text_ref = smol.lm(input_ids=ids).logits
        text_got = smol(ids, media=enc_a["media"][:1], media_mask=enc_a["media_mask"][:1]).logits
    v = smol.lm_vocab_size
    cols = [i for i in range(v) if i not in (smol.media_token_id, smol.eoc_token_id)]
    real = enc_a["attention_mask"].bool()
    assert (logits_a[..., cols] - ref[..., cols])[real].abs().max() < 1e-5
    assert torch.equal(logits_a, logits_b)
    assert (text_got[..., cols] - text_ref[..., cols]).abs().max() < 1e-5
    # the new tokens are their own small rows: the frozen embedding matrix keeps its size
    assert smol.lm.get_input_embeddings().weight.shape[0] == v
    assert smol.new_tokens.input_rows.shape == (2, smol.lm.config.hidden_size)


def test_smollm2_sequences_start_with_its_document_separator(smol):
    """The preset puts SmolLM2's pretraining document separator <|endoftext|> (not the Instruct BOS
    <|im_start|>, a chat-role marker) before every sequence; the tokenizer adds nothing itself."""
    assert smol.config.doc_start_token == "<|endoftext|>"
    enc = smol.processor([[random_image(1), "A red circle."]])
    ids = enc["input_ids"][0].tolist()
    assert smol.tokenizer.convert_ids_to_tokens(ids[:2]) == ["<|endoftext|>", "<image>"]
