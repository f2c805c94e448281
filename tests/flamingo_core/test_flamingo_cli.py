"""The ``flamingo`` CLI on a saved tiny model: generate, chat, and one-line errors."""

import io

import pytest
from fc_helpers import make_model, random_image, set_gates

from flamingo_core import cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = make_model()
    set_gates(model, 1.0)
    model.save_pretrained(root / "model")
    random_image(1).save(root / "a.png")
    random_image(2).save(root / "b.png")
    expected = model.processor.decode(model.generate(
        **model.processor([[random_image(1), "A photo of"]], padding_side="left"), max_new_tokens=5, num_beams=1))[0]
    return root, expected.strip()


def test_generate(saved, capsys):
    root, expected = saved
    rc = cli.main(["generate", "--model", str(root / "model"), "--image", str(root / "a.png"),
                   "--prompt", "A photo of", "--max-new-tokens", "5", "--num-beams", "1"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == expected


def test_generate_errors_are_one_line(saved, capsys):
    root, _ = saved
    rc = cli.main(["generate", "--model", str(root / "model"), "--image", str(root / "missing.png"),
                   "--prompt", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: image file not found") and err.count("\n") == 1
    rc = cli.main(["generate", "--model", str(root / "model"), "--image", str(root / "a.png"),
                   "--prompt", "<image> and <image>"])
    assert rc == 2 and "2 <image> markers in --prompt but 1 --image" in capsys.readouterr().err
    rc = cli.main(["generate", "--model", str(root / "nope"), "--prompt", "x"])
    assert rc == 2 and "unknown Flamingo model" in capsys.readouterr().err


def test_chat(saved, capsys, monkeypatch):
    root, _ = saved
    script = f"/image {root / 'a.png'}\nWhat is it?\n/image {root / 'nope.png'}\n/image {root / 'b.png'}\nAnd now?\n/quit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    rc = cli.main(["chat", "--model", str(root / "model"), "--max-new-tokens", "3", "--num-beams", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "(image 1 loaded" in out and "(image 2 loaded" in out and "error: image file not found" in out
    assert out.count("Assistant:") == 2


def test_train_dispatch(capsys, monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("flamingo_core.train")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "flamingo_core.train", fake)
    assert cli.main(["train", "--config", "x.json"]) == 0
    assert calls == [["--config", "x.json"]]


# ---------------------------------------------------------------- decoding flags, streaming, chat templates


def api_replies(root, prompt_items, **options):
    import flamingo_core as fc

    model = fc.Flamingo.from_pretrained(root / "model")
    enc = model.processor([prompt_items], padding_side="left")
    return [t.strip() for t in model.processor.decode(model.generate(**enc, **options))]


@pytest.mark.parametrize("flags, options", [
    (["--num-beams", "3", "--num-return-sequences", "2", "--length-penalty", "0.5"],
     {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5}),
    (["--num-beams", "1", "--repetition-penalty", "1.7", "--no-repeat-ngram-size", "2", "--min-new-tokens", "3"],
     {"repetition_penalty": 1.7, "no_repeat_ngram_size": 2, "min_new_tokens": 3}),
    (["--sample", "--top-k", "5", "--temperature", "0.8", "--seed", "4", "--num-return-sequences", "2"],
     {"do_sample": True, "top_k": 5, "temperature": 0.8, "seed": 4, "num_return_sequences": 2}),
], ids=["beams", "penalties", "sampling"])
def test_generate_decoding_flags_are_the_api_options(saved, capsys, flags, options):
    root, _ = saved
    rc = cli.main(["generate", "--model", str(root / "model"), "--image", str(root / "a.png"),
                   "--prompt", "A photo of", "--max-new-tokens", "6", *flags])
    assert rc == 0
    expected = api_replies(root, [random_image(1), "A photo of"], max_new_tokens=6, **options)
    assert capsys.readouterr().out.splitlines() == expected
    assert len(expected) == options.get("num_return_sequences", 1)


def test_generate_stop_string(saved, capsys):
    root, _ = saved
    free = api_replies(root, [random_image(1), "A photo of"], max_new_tokens=8, num_beams=1)[0]
    stop = next(free[i:i + 1] for i in range(2, len(free)) if free[i].isascii() and free[i].strip())
    rc = cli.main(["generate", "--model", str(root / "model"), "--image", str(root / "a.png"), "--prompt",
                   "A photo of", "--max-new-tokens", "8", "--num-beams", "1", "--stop-string", stop])
    out = capsys.readouterr().out.strip()
    assert rc == 0 and out.endswith(stop) and free.startswith(out) and len(out) < len(free)


def test_generate_options_that_do_not_go_together_are_one_line(saved, capsys):
    root, _ = saved
    rc = cli.main(["generate", "--model", str(root / "model"), "--prompt", "x", "--num-beams", "2",
                   "--num-return-sequences", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "num_return_sequences (3)" in err and "num_beams (2)" in err


class Spy:
    """Wraps a model's generate, recording each call's streamer and prompt text."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.inner = model.generate
        model.generate = self

    def __call__(self, input_ids, *args, **kwargs):
        self.calls.append((self.model.tokenizer.decode(input_ids[0]), kwargs.get("streamer")))
        return self.inner(input_ids, *args, **kwargs)


def chat_with(model, script, monkeypatch, *flags):
    monkeypatch.setattr(cli, "load_model", lambda name, device: model)
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    return cli.main(["chat", "--model", "unused", "--max-new-tokens", "4", *flags])


def test_chat_streams_greedy_answers(saved, capsys, monkeypatch):
    import flamingo_core as fc

    root, _ = saved
    model = fc.Flamingo.from_pretrained(root / "model")
    spy = Spy(model)
    rc = chat_with(model, f"/image {root / 'a.png'}\nWhat is it?\n/quit\n", monkeypatch)
    out = capsys.readouterr().out
    expected = api_replies(root, [random_image(1), "User: What is it? Assistant:"], max_new_tokens=4)[0]
    assert rc == 0 and f"Assistant: {expected}\n" in out and out.count("Assistant:") == 1
    assert spy.calls[0][1] is not None  # greedy (the chat default): streamed
    rc = chat_with(model, "What is it?\n/quit\n", monkeypatch, "--num-beams", "3")
    assert rc == 0 and spy.calls[-1][1] is None and capsys.readouterr().out.count("Assistant:") == 1


TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_chat_uses_the_tokenizers_chat_template(saved, capsys, monkeypatch):
    import flamingo_core as fc

    root, _ = saved
    model = fc.Flamingo.from_pretrained(root / "model")
    model.tokenizer.chat_template = TEMPLATE
    spy = Spy(model)
    script = f"/image {root / 'a.png'}\nWhat is it?\nAnd now?\n/quit\n"
    assert chat_with(model, script, monkeypatch) == 0
    out = capsys.readouterr().out
    first_reply = out.split("Assistant: ")[1].split("\n")[0]
    bos = model.tokenizer.bos_token
    assert spy.calls[0][0] == f"{bos}<|user|><image>What is it?\n<|assistant|>"
    assert spy.calls[1][0] == (f"{bos}<|user|><image>What is it?\n<|assistant|>{first_reply}\n"
                               "<|user|>And now?\n<|assistant|>")
    assert chat_with(model, script, monkeypatch, "--plain-prompt") == 0
    assert spy.calls[2][0] == f"{bos}<image>User: What is it? Assistant:"


def test_a_failing_chat_template_is_an_error_line(saved, capsys, monkeypatch):
    import flamingo_core as fc

    root, _ = saved
    model = fc.Flamingo.from_pretrained(root / "model")
    model.tokenizer.chat_template = "{{ raise_exception('no images here') }}"
    assert chat_with(model, "What is it?\nhello\n/quit\n", monkeypatch) == 0
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "no images here" in errors[0] and "--plain-prompt" in errors[0]
    assert chat_with(model, "hello\n/quit\n", monkeypatch, "--plain-prompt") == 0
    assert capsys.readouterr().out.count("Assistant:") == 1
