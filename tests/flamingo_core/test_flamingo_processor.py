"""FlamingoProcessor: <image> placement, padding sides, videos, OBELICS layout, count errors, decoding."""

import pytest
import torch
from fc_helpers import random_image

from flamingo_core import FlamingoProcessor, build_byte_tokenizer
from flamingo_core.vision import ConvStemVisionEncoder


@pytest.fixture(scope="module")
def processor():
    return FlamingoProcessor(build_byte_tokenizer(), ConvStemVisionEncoder().preprocess)


def test_images_become_media_tokens_in_order(processor):
    a, b = random_image(1), random_image(2)
    enc = processor([["hi ", a, "x<EOC>", b, "y"], ["z"]])
    ids = enc["input_ids"][0].tolist()
    assert ids.count(processor.media_token_id) == 2 and ids.count(processor.eoc_token_id) == 1
    assert ids.index(processor.media_token_id) == 3  # after "hi "
    assert enc["media"].shape == (2, 2, 1, 3, 32, 32)
    assert enc["media_mask"].tolist() == [[True, True], [False, False]]
    torch.testing.assert_close(enc["media"][0, 1, 0], processor.image_transform(b))
    assert enc["attention_mask"][1].tolist() == [1] + [0] * (len(ids) - 1)  # right padding by default


def test_left_padding(processor):
    enc = processor([["a long prompt", random_image(1)], ["b"]], padding_side="left")
    assert enc["attention_mask"][1, -1] == 1 and enc["attention_mask"][1, 0] == 0
    assert enc["input_ids"][1, -1] == processor.tokenizer.convert_tokens_to_ids("b")


def test_text_without_media_has_no_media_tensor(processor):
    enc = processor(["only text", "more"])
    assert enc["media"] is None and enc["media_mask"] is None


def test_videos_are_padded_with_a_frame_mask(processor):
    video3 = [random_image(i) for i in range(3)]
    enc = processor([["v", video3, "x", random_image(9)], ["w", torch.rand(2, 3, 32, 32)]])
    assert enc["media"].shape == (2, 2, 3, 3, 32, 32)
    assert enc["media_frame_mask"][0].tolist() == [[True, True, True], [True, False, False]]
    assert enc["media_frame_mask"][1, 0].tolist() == [True, True, False]
    uint8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert processor([["u", uint8]])["media"].shape == (1, 1, 2, 3, 32, 32)


@pytest.mark.parametrize(
    "texts,media,message",
    [
        (["a <image> b <image> c <image>", "d"], [[random_image(1), random_image(2)], []],
         r"3 <image> tokens in the text but 2 images were given \(sample 0\)"),
        (["a", "b <image>"], [[], []], r"1 <image> tokens in the text but 0 images were given \(sample 1\)"),
        (["a"], [[random_image(1)]], r"0 <image> tokens in the text but 1 image was given \(sample 0\)"),
    ],
)
def test_media_count_errors(processor, texts, media, message):
    with pytest.raises(ValueError, match=message):
        processor.encode(texts, media)


def test_bad_items_are_rejected(processor):
    with pytest.raises(TypeError, match="got int"):
        processor([["a", 3]])
    with pytest.raises(ValueError, match="padding_side"):
        processor([["a"]], padding_side="middle")
    with pytest.raises(ValueError, match="exactly one of texts"):
        processor.from_obelics(["a", None], [None, None])


def test_obelics_layout(processor):
    texts = ["A page.", None, "A red circle.", None, "Next."]
    images = [None, random_image(1), None, random_image(2), None]
    enc = processor.from_obelics(texts, images)
    text = processor.tokenizer.decode(enc["input_ids"][0])
    assert text == "A page.<EOC><image>A red circle.<EOC><image>Next.<EOC>"
    assert enc["media"].shape[:2] == (1, 2)
    batch = processor.from_obelics([texts, ["x"]], [images, [None]])
    assert batch["input_ids"].shape[0] == 2


def test_truncation_drops_cut_media(processor):
    enc = processor([["ab", random_image(1), "cdefgh", random_image(2), "ij"]], max_length=5)
    assert enc["input_ids"].shape[1] == 5
    assert int(enc["media_mask"].sum()) == 1


def test_decode_cuts_at_stop(processor):
    tok = processor.tokenizer
    ids = torch.tensor([tok("yes")["input_ids"] + [processor.eoc_token_id] + tok("junk")["input_ids"]])
    assert processor.decode(ids) == ["yes"]


def test_doc_start_token_starts_every_sequence_before_padding():
    """"auto" takes the tokenizer's BOS (the byte tokenizer's <|endoftext|>) when the tokenizer adds none, so the
    LM's first position is a token it knows rather than the trainable <image>; None keeps the text as is."""
    tok = build_byte_tokenizer()
    plain = FlamingoProcessor(tok, ConvStemVisionEncoder().preprocess)
    auto = FlamingoProcessor(tok, ConvStemVisionEncoder().preprocess, doc_start_token="auto")
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert plain.doc_start_id is None and auto.doc_start_id == bos
    samples = [[random_image(1), "a red circle<EOC>"], ["b"]]
    for side in ("right", "left"):
        ref, got = plain(samples, padding_side=side), auto(samples, padding_side=side)
        for i in range(2):
            r = ref["input_ids"][i][ref["attention_mask"][i].bool()].tolist()
            g = got["input_ids"][i][got["attention_mask"][i].bool()].tolist()
            assert g == [bos, *r]
    assert got["input_ids"][0, 1] == auto.media_token_id  # the image follows the start token


def test_doc_start_token_is_not_doubled_and_must_exist():
    from tokenizers import processors

    tok = build_byte_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(  # a tokenizer that adds its own BOS (LLaMA-2)
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 256)])
    assert tok("a")["input_ids"][0] == 256
    proc = FlamingoProcessor(tok, ConvStemVisionEncoder().preprocess, doc_start_token="auto")
    assert proc.doc_start_id is None and proc(["a"])["input_ids"][0].tolist().count(256) == 1
    with pytest.raises(ValueError, match="'<s>' is not a token"):
        FlamingoProcessor(build_byte_tokenizer(), ConvStemVisionEncoder().preprocess, doc_start_token="<s>")


def test_model_processor_follows_the_config():
    from fc_helpers import make_model

    model = make_model("llama")
    assert model.config.doc_start_token == "auto"
    assert model.processor.doc_start_id == model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.config.doc_start_token = None
    assert model.processor.doc_start_id is None


def test_saved_models_keep_their_start_token_and_older_saves_load_without_one(tmp_path):
    import json

    from fc_helpers import make_model

    import flamingo_core as fc

    model = make_model("llama")
    model.save_pretrained(tmp_path / "new")
    assert fc.load_config(tmp_path / "new").doc_start_token == "auto"
    model.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    del cfg["flamingo"]["doc_start_token"]  # what a save from before the field looks like
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert fc.load_config(tmp_path / "old").doc_start_token is None  # it was trained without one
