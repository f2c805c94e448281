"""``flamingo demo``: the page driven by a real headless Chromium (an image uploaded, a question asked, the answer
read as it streams; a corrupt upload's error on the page), the answers equal to ``flamingo generate``'s, the
few-shot builder (random, RICES), the refused inputs, and the server's defaults (localhost, no share link)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
from fc_helpers import random_image, set_gates

import flamingo_core as fc
from flamingo_core import cli

pytest.importorskip("gradio", reason="the web demo needs Gradio: pip install 'flamingo-core[demo]'")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from flamingo_core.web_demo import app as web_app  # noqa: E402
from flamingo_core.web_demo.demonstrations import FewShotBuilder, read_support  # noqa: E402
from flamingo_core.web_demo.dialogue import Decoding, stream_answer  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
QUESTION = "What is in the picture?"
NEW_TOKENS = 12


def letters_lm(folder: Path) -> Path:
    """The tiny preset's LLaMA with matrices drawn wide and logits only for letters and space (space more likely),
    saved with the byte tokenizer: its greedy answers are words that vary and read as text on the page (a random LM
    at the preset's std repeats one byte, often unprintable)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(fc.load_config("tiny").lm_config, tie_word_embeddings=False)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    tokenizer = fc.build_byte_tokenizer()
    keep = [i for i in range(cfg["vocab_size"]) if (t := tokenizer.decode([i])).isascii() and (t.isalpha() or t == " ")]
    with torch.no_grad():
        for p in lm.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
        head = lm.get_output_embeddings().weight
        others = torch.ones(head.shape[0], dtype=torch.bool)
        others[keep] = False
        head[others] = 0
        head[tokenizer.encode(" ")[0]] *= 2.5  # words: transformers' streamers emit text a word at a time
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("web_demo")
    model = fc.create_model(fc.load_config("tiny", lm=str(letters_lm(root / "lm"))))
    set_gates(model, 1.0)
    model.save_pretrained(root / "model")
    random_image(1).save(root / "a.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return root


def generate_cli(root: Path, prompt: str, images: list, capsys, *flags: str) -> str:
    """What ``flamingo generate`` prints for the prompt, the images and the flags."""
    capsys.readouterr()
    argv = ["generate", "--model", str(root / "model"), "--prompt", prompt, "--max-new-tokens", str(NEW_TOKENS),
            "--num-beams", "1", *flags]
    for image in images:
        argv += ["--image", str(image)]
    assert cli.main(argv) == 0
    return capsys.readouterr().out.strip()


def demo_args(root: Path, *extra: str):
    return cli.parse_args(["demo", "--model", str(root / "model"), "--max-new-tokens", str(NEW_TOKENS), *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the page in a headless browser


def slow_streaming(model, seconds: float):
    """Each streamed token waits ``seconds`` before it is shown, so the browser sees the answer grow (the tiny
    model writes all of it within one frame)."""
    inner = model.generate

    def generate(*args, streamer=None, **kwargs):
        if streamer is not None:
            put = streamer.put
            streamer.put = lambda value: (time.sleep(seconds), put(value))
        return inner(*args, streamer=streamer, **kwargs)

    model.generate = generate
    return model


@pytest.fixture(scope="module")
def page(saved):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="needs selenium (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager never downloads a browser or a driver
    port = free_port()
    model = slow_streaming(fc.Flamingo.from_pretrained(saved / "model"), 0.15)
    server = web_app.launch(demo_args(saved, "--port", str(port)), model=model, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver, f"http://127.0.0.1:{port}/"
    finally:
        driver.quit()
        server.close()


RECORD_ANSWERS = """
window.seen = [];
const chat = document.getElementById('chat');
new MutationObserver(() => {
  const bots = chat.querySelectorAll('[data-testid=bot]');
  const text = bots.length ? bots[bots.length - 1].textContent : '';
  if (text && window.seen[window.seen.length - 1] !== text) window.seen.push(text);
}).observe(chat, {subtree: true, childList: true, characterData: true});
window.statuses = [];
const status = document.getElementById('demo-status');
new MutationObserver(() => window.statuses.push(status.textContent.trim()))
  .observe(status, {subtree: true, childList: true, characterData: true});
"""


def open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chat-input textarea"))
    driver.execute_script(RECORD_ANSWERS)


def send(driver, files: list, text: str) -> str:
    """Attach ``files``, send ``text``, wait for the turn to end; returns the status line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.statuses = []")
    box = driver.find_element(By.CSS_SELECTOR, "#chat-input textarea")
    box.send_keys(Keys.CONTROL, "a", Keys.DELETE)  # a refused turn leaves its text in the box
    for f in files:
        upload = driver.find_element(By.CSS_SELECTOR, "#chat-input input[type=file]")
        driver.execute_script("arguments[0].value = ''", upload)  # chromedriver adds to a multiple input's files
        upload.send_keys(str(f))
    thumbnails = "#chat-input .thumbnail-item"
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, thumbnails)) >= len(files))
    box.send_keys(text, Keys.ENTER)
    def ended(d):  # the first "done" or error after this turn's "reading ..."
        statuses = d.execute_script("return window.statuses")
        start = next((i for i, s in enumerate(statuses) if s.startswith("reading")), len(statuses))
        return next((s for s in statuses[start:] if s == "done" or s.startswith("Error")), None)

    return WebDriverWait(driver, 40).until(ended)


def test_page_streams_the_answer_of_flamingo_generate(page, saved, capsys):
    from selenium.webdriver.common.by import By

    driver, url = page
    open_page(driver, url)
    assert send(driver, [saved / "a.png"], QUESTION) == "done"
    shown = driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid=bot]")[-1].get_attribute("textContent")
    prompt = driver.find_element(By.CSS_SELECTOR, "#chat-prompt textarea").get_attribute("value")
    assert prompt == f"<image>User: {QUESTION} Assistant:"
    expected = generate_cli(saved, prompt, [saved / "a.png"], capsys)
    assert len(expected.split()) >= 2 and shown == expected
    seen = driver.execute_script("return window.seen")
    partial = [s for s in seen if s != expected]
    assert partial and all(expected.startswith(s) for s in partial), seen  # grew token by token, then whole
    gates = driver.find_element(By.ID, "gates").text
    assert "xattn" in gates and gates.count("+0.7616") == 4  # tanh(1): the saved model's open gates, 2 blocks
    if os.environ.get("FLAMINGO_DEMO_SCREENSHOT"):
        driver.set_window_size(1400, 1250)
        driver.save_screenshot(os.environ["FLAMINGO_DEMO_SCREENSHOT"])  # docs/web_demo.png


def test_page_shows_a_corrupt_upload_and_goes_on(page, saved):
    from selenium.webdriver.common.by import By

    driver, url = page
    open_page(driver, url)
    status = send(driver, [saved / "corrupt.png"], QUESTION)
    assert status.startswith("Error: cannot decode image corrupt.png"), status
    assert not driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid=bot]")  # no turn was added
    assert send(driver, [saved / "a.png"], QUESTION) == "done"  # the server still answers
    assert driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid=bot]")[-1].get_attribute("textContent")


# ---------------------------------------------------------------- answers, few-shot, refused inputs, defaults


def decoding_args(root: Path, mode: str, **kw):
    return Decoding(mode=mode, max_new_tokens=NEW_TOKENS, **kw).args(demo_args(root))


@pytest.mark.parametrize("mode, flags, kw", [
    ("beam search", ["--num-beams", "3"], {"num_beams": 3}),
    ("sampling", ["--sample", "--seed", "5", "--top-k", "20"], {"seed": 5, "top_k": 20}),
])
def test_page_decoding_modes_answer_as_generate(saved, capsys, mode, flags, kw):
    model = fc.Flamingo.from_pretrained(saved / "model")
    items = cli.build_items(f"<image>User: {QUESTION} Assistant:", [random_image(1)], "<image>")
    decoding = Decoding(mode=mode, max_new_tokens=NEW_TOKENS, **kw)
    replies = list(stream_answer(model, items, decoding.args(demo_args(saved)), decoding.streams))
    expected = generate_cli(saved, f"<image>User: {QUESTION} Assistant:", [saved / "a.png"], capsys, *flags)
    assert replies[-1] == expected and (len(replies) == 1) == (mode == "beam search")


def caption_folder(root: Path, n: int = 6) -> Path:
    import json

    (root / "images").mkdir(parents=True)
    images = []
    for i in range(n):
        random_image(10 + i).save(root / "images" / f"train_{i}.png")
        images.append({"filepath": "images", "filename": f"train_{i}.png", "split": "train",
                       "sentences": [{"raw": f"picture number {i}."}, {"raw": "another caption."}]})
    images.append({"filepath": "images", "filename": "train_0.png", "split": "test", "sentences": [{"raw": "x"}]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    return root


def fc_image(path):
    return cli.load_image(str(path))


def test_fewshot_rices_puts_the_most_similar_last_and_answers_as_generate(saved, tmp_path, capsys):
    model = fc.Flamingo.from_pretrained(saved / "model")
    support = read_support(caption_folder(tmp_path / "coco"))
    assert support.task == "caption" and len(support.examples) == 6  # the test split is not a demonstration
    builder = FewShotBuilder(model)
    query = random_image(13)  # the very image of example 3
    demos = builder.select(support, 3, "RICES", query)
    assert demos[-1].answer == "picture number 3." and len({d.image for d in demos}) == 3
    embed = builder._embed
    sims = [float(embed([fc_image(d.image)])[0] @ embed([query])[0]) for d in demos]
    assert sims == sorted(sims)  # least similar first, the most similar next to the query
    text, images = builder.build(support, demos, None)
    assert text == "".join(f"<image>Output: {d.answer}<EOC>" for d in demos) + "<image>Output:"
    random_image(13).save(tmp_path / "query.png")
    decoding = Decoding(max_new_tokens=NEW_TOKENS)
    reply = list(stream_answer(model, cli.build_items(text, [*images, query], "<image>"),
                               decoding.args(demo_args(saved)), True))[-1]
    assert reply == generate_cli(saved, text, [*(d.image for d in demos), tmp_path / "query.png"], capsys)


def test_fewshot_random_is_seeded_and_vqa_needs_a_question(saved, tmp_path):
    import json

    model = fc.Flamingo.from_pretrained(saved / "model")
    builder = FewShotBuilder(model)
    support = read_support(caption_folder(tmp_path / "coco"))
    first = builder.select(support, 4, "random", None, seed=1)
    assert first == builder.select(support, 4, "random", None, seed=1) and len(set(first)) == 4
    assert first != builder.select(support, 4, "random", None, seed=2)
    with pytest.raises(cli.UserError, match="7 shots asked but .* has 6 examples"):
        builder.select(support, 7, "random", None)
    vqa = tmp_path / "vqa"
    (vqa / "images").mkdir(parents=True)
    random_image(1).save(vqa / "images" / "000000000001.png")
    (vqa / "train_questions.json").write_text(json.dumps(
        {"questions": [{"image_id": 1, "question": "What colour?", "question_id": 7}]}))
    (vqa / "train_annotations.json").write_text(json.dumps(
        {"annotations": [{"question_id": 7, "multiple_choice_answer": "red", "answers": [{"answer": "red"}]}]}))
    support = read_support(vqa)
    text, _ = builder.build(support, support.examples, "And this one?")
    assert text == "<image>Question: What colour? Answer: red<EOC><image>Question: And this one? Answer:"
    with pytest.raises(cli.UserError, match="type the question"):
        builder.build(support, support.examples, " ")
    with pytest.raises(cli.UserError, match="no such folder; expected a folder with dataset_"):
        read_support(tmp_path / "missing")


def page_turn(slot, files, text, **decoding):
    """The chat's submit handler as the page runs it: the last (chatbot, state, status, prompt, box)."""
    settings = Decoding(max_new_tokens=NEW_TOKENS, **decoding)
    settings = [getattr(settings, f) for f in ("mode", "max_new_tokens", "num_beams", "temperature", "top_k",
                                               "top_p", "seed")]
    return list(web_app._send(slot, {"text": text, "files": [str(f) for f in files]}, [], None, *settings))[-1]


def test_refused_inputs_are_errors_on_the_page(saved, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    random_image(2, size=64).save(tmp_path / "big.png")
    slot = web_app.ModelSlot(demo_args(saved, "--max-image-pixels", "1024"))
    cases = [([tmp_path / "notes.txt"], QUESTION, "cannot decode image notes.txt"),
             ([tmp_path / "big.png"], QUESTION, "refusing big.png: 64 x 64 = 4,096 pixels, over the demo's limit of 1,024"),
             ([saved / "a.png"], "word " * 120, "exceeds the language model's context of 512 tokens"),
             ([saved / "a.png"], "<image> and <image>", "2 <image> markers in the message but 1 files")]
    for files, text, message in cases:
        chat, state, status, _, box = page_turn(slot, files, text)
        assert status.startswith("**Error:**") and message in status and "\n" not in status, status
        assert chat == [] and box == {"text": text.strip(), "files": []}
        assert state is None or not state["conv"].images  # nothing of the refused turn is kept
    chat, _, status, prompt, _ = page_turn(slot, [saved / "a.png"], QUESTION)  # and the server goes on
    assert status == "done" and chat[-1]["role"] == "assistant" and prompt.startswith("<image>")


def test_a_model_that_fails_to_load_is_shown_on_the_page(saved, tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    slot = web_app.ModelSlot(cli.parse_args(["demo", "--model", str(tmp_path / "broken")]))
    assert slot.model is None and "config.json" in slot.error
    assert slot.describe().startswith("**Model failed to load:**") and str(tmp_path / "broken") in slot.describe()
    assert capsys.readouterr().err.startswith("error: ")
    status = page_turn(slot, [saved / "a.png"], QUESTION)[2]
    assert status.startswith("**Error:** no model is loaded:")
    slot.load(str(saved / "model"))  # the page's Load button
    assert slot.model is not None and page_turn(slot, [saved / "a.png"], QUESTION)[2] == "done"


def test_demo_serves_localhost_without_share_link(saved, monkeypatch, capsys):
    import gradio as gr

    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append(kw))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    assert cli.main(["demo", "--model", str(saved / "model")]) == 0
    assert calls[0]["server_name"] == "127.0.0.1" and calls[0]["server_port"] == 7860
    assert calls[0]["share"] is False and calls[0]["mcp_server"] is False
    assert "http://127.0.0.1:7860" in capsys.readouterr().out
    assert cli.main(["demo", "--model", str(saved / "model"), "--share"]) == 2  # there is no such flag
    assert "unrecognized arguments: --share" in capsys.readouterr().err


def test_demo_cli_errors_are_one_line(saved, monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["demo", "--model", str(saved / "model"), "--port", str(port)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # not the LM's bar
    assert len(err) == 1 and err[0].startswith(f"error: cannot serve on 127.0.0.1:{port}: Cannot find empty port")
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)  # not installed
    assert cli.main(["demo", "--model", str(saved / "model")]) == 2
    assert capsys.readouterr().err == "error: flamingo demo needs Gradio: pip install 'flamingo-core[demo]'\n"


def test_a_video_upload_is_its_evenly_spaced_frames(saved, tmp_path):
    av = pytest.importorskip("av", reason="videos are read with PyAV (the [video] extra)")
    import numpy as np

    from flamingo_core.web_demo.uploads import load_upload

    with av.open(str(tmp_path / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=1)
        stream.width = stream.height = 32
        for i in range(6):
            frame = np.full((32, 32, 3), 40 * i, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    frames = load_upload(tmp_path / "clip.mp4", video_frames=3)
    assert len(frames) == 3
    assert [round(np.asarray(f).mean() / 40) for f in frames] == [0, 2, 5]  # first, middle, last (+-codec)
    slot = web_app.ModelSlot(demo_args(saved, "--video-frames", "3"))
    chat, state, status, prompt, _ = page_turn(slot, [tmp_path / "clip.mp4"], "What happens?")
    assert status == "done" and prompt == "<image>User: What happens? Assistant:"
    assert isinstance(state["conv"].images[0], list) and len(state["conv"].images[0]) == 3
