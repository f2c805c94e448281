"""Prompts are built exactly in the paper's formats, with media where their <image> markers are."""

import pytest
from PIL import Image

from fewshot_eval.model import prompt_to_text
from fewshot_eval.postprocess import postprocess
from fewshot_eval.prompts import PromptTemplate, Shot, build_prompt, get_template


def _img(v):
    return Image.new("RGB", (4, 4), (v, v, v))


def test_caption_two_shot_string_and_media_positions():
    a, b, q = _img(1), _img(2), _img(3)
    p = build_prompt([Shot(a, "A red square."), Shot(b, "A blue circle.")], Shot(q), get_template("caption"))
    assert prompt_to_text(p) == "<image>Output: A red square.<EOC><image>Output: A blue circle.<EOC><image>Output:"
    assert p[0] is a and p[2] is b and p[4] is q
    assert p[1] == "Output: A red square.<EOC>" and p[5] == "Output:" and len(p) == 6


def test_vqa_format():
    p = build_prompt([Shot(_img(1), "2", "How many?")], Shot(_img(2), question="What colour?"), get_template("vqa"))
    assert prompt_to_text(p) == "<image>Question: How many? Answer: 2<EOC><image>Question: What colour? Answer:"


def test_zero_shot_uses_text_only_demonstrations():
    q = _img(3)
    p = build_prompt([Shot(_img(1), "A cat."), Shot(_img(2), "A dog.")], Shot(q), get_template("caption"), True)
    assert prompt_to_text(p) == "Output: A cat.<EOC>Output: A dog.<EOC><image>Output:"
    assert [x for x in p if not isinstance(x, str)] == [q]


def test_video_is_one_media_item():
    frames = [_img(i) for i in range(3)]
    p = build_prompt([], Shot(frames, question="What moves?"), get_template("video-qa"))
    assert p == [frames, "Question: What moves? Answer:"]
    assert prompt_to_text(p) == "<image>Question: What moves? Answer:"


def test_k_shot_prompt_has_k_plus_one_images_in_order():
    imgs = [_img(i) for i in range(9)]
    demos = [Shot(im, f"c{i}") for i, im in enumerate(imgs[:8])]
    p = build_prompt(demos, Shot(imgs[8]), get_template("classify"))
    assert [x for x in p if not isinstance(x, str)] == imgs
    assert prompt_to_text(p).count("<image>") == 9 and prompt_to_text(p).endswith("<image>Output:")


def test_custom_template_and_continuation():
    t = PromptTemplate("<image>Q: {question} A: {answer}<EOC>")
    assert t.render_query("why?") == "<image>Q: why? A:"
    assert t.continuation("because") == " because<EOC>"
    assert get_template("classify").continuation("circle") == " circle<EOC>"


@pytest.mark.parametrize("bad", ["Output: {answer}", "<image><image>{answer}", "<image>Output:", "{answer}<image>"])
def test_bad_templates_are_rejected(bad):
    with pytest.raises(ValueError, match="template"):
        PromptTemplate(bad)


@pytest.mark.parametrize(
    "raw,task,expected",
    [("A red square.<EOC>Output: junk", "caption", "A red square."),
     (" a red square\nOutput: a blue one", "caption", "a red square"),
     ("yes. Question: is it?", "vqa", "yes"),
     ("blue</s>", "vqa", "blue"),
     ("No. What is the", "vqa", "No"),
     ("yellowThe answer is yellow", "vqa", "yellow"),
     ("3More pictures to", "video-qa", "3"),
     ("3.5 metres", "vqa", "3.5 metres"),
     ("Yes! It is", "vqa", "Yes"),
     ("A red square. A blue one", "caption", "A red square. A blue one"),
     ("", "caption", "")],
)  # fmt: skip
def test_postprocess(raw, task, expected):
    assert postprocess(raw, task) == expected
