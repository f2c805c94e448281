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
