"""Bad inputs to stage-2 inference and model loading (issue 15): each gives one error line naming the input and
exit code 2 in ``flamingo generate``; in ``flamingo chat`` one error line and the conversation goes on."""

from __future__ import annotations

import io
import json
import shutil
import struct
import types
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from fc_helpers import make_model, random_image, set_gates
from PIL import Image

import flamingo_core as fc
from flamingo_core import cli
from flamingo_core.config import load_config


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb for PIL)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_generate")
    model = make_model()
    set_gates(model, 1.0)
    model.save_pretrained(root / "model")
    random_image(1).save(root / "a.png")
    (root / "bomb.png").write_bytes(png_claiming(30000, 30000))  # over 2x MAX_IMAGE_PIXELS: PIL raises
    (root / "bomb_warn.png").write_bytes(png_claiming(10000, 10000))  # between 1x and 2x: PIL only warns
    return root


def one_error_line(capsys, rc: int, *names: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def broken_copy(root: Path, name: str) -> Path:
    dst = root / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(root / "model", dst)
    return dst


def chat(root: Path, script: str, monkeypatch, capsys, *extra: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    rc = cli.main(["chat", "--model", str(root / "model"), "--max-new-tokens", "3", "--num-beams", "1", *extra])
    return rc, capsys.readouterr().out


# ---------------------------------------------------------------- decoding arguments: refused by the parser


@pytest.mark.parametrize("command", ["generate", "chat"])
@pytest.mark.parametrize("flag, value", [("--num-beams", "0"), ("--max-new-tokens", "-3"), ("--max-new-tokens", "0"),
                                         ("--top-p", "0"), ("--top-p", "1.5"), ("--temperature", "0"),
                                         ("--top-k", "-1"), ("--repetition-penalty", "0"),
                                         ("--no-repeat-ngram-size", "-1"), ("--min-new-tokens", "-2"),
                                         ("--length-penalty", "long")])
def test_decoding_arguments_out_of_range_are_one_line(command, flag, value, capsys):
    argv = [command, "--model", "unused", flag, value] + (["--prompt", "x"] if command == "generate" else [])
    rc = cli.main(argv)
    one_error_line(capsys, rc, flag, value)


def test_num_return_sequences_out_of_range_is_one_line(capsys):
    rc = cli.main(["generate", "--model", "unused", "--prompt", "x", "--num-return-sequences", "0"])
    one_error_line(capsys, rc, "--num-return-sequences", "0")


@pytest.mark.parametrize("kwargs, name", [({"do_sample": True, "top_p": 0.0}, "top_p"),
                                          ({"do_sample": True, "temperature": 0.0}, "temperature"),
                                          ({"top_k": -1}, "top_k")])
def test_generate_api_names_the_bad_argument(tiny_model, kwargs, name):
    enc = tiny_model.processor([["x"]], padding_side="left")
    with pytest.raises(ValueError, match=name):
        tiny_model.generate(enc["input_ids"], enc["attention_mask"], **kwargs)


# ---------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("bomb", ["bomb.png", "bomb_warn.png"])
def test_generate_refuses_a_decompression_bomb_in_one_line(root, bomb, capsys):
    with warnings.catch_warnings(record=True) as caught:  # PIL's warning would be a second stderr line
        warnings.simplefilter("always")
        rc = cli.main(["generate", "--model", str(root / "model"), "--image", str(root / bomb), "--prompt", "x"])
    one_error_line(capsys, rc, bomb, "exceeds limit")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_chat_refuses_a_decompression_bomb_and_goes_on(root, monkeypatch, capsys):
    script = f"/image {root / 'bomb.png'}\n/image {root / 'bomb_warn.png'}\n/image {root / 'a.png'}\nWhat is it?\n/quit\n"
    rc, out = chat(root, script, monkeypatch, capsys)
    assert rc == 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "bomb.png" in errors[0] and "bomb_warn.png" in errors[1]
    assert "(image 1 loaded" in out and "(image 2 loaded" not in out  # the bombs were not added
    assert out.count("Assistant:") == 1


# ---------------------------------------------------------------- prompts longer than the LM's context


def test_context_length_is_the_lms_positions(tiny_model):
    assert tiny_model.context_length == 512  # LlamaConfig.max_position_embeddings
    assert make_model("gpt2").context_length == 512  # GPT2Config.n_positions
    no_limit = types.SimpleNamespace(lm=types.SimpleNamespace(config=types.SimpleNamespace()))
    assert fc.Flamingo.context_length.fget(no_limit) is None


def test_generate_refuses_a_prompt_past_the_context(root, capsys):
    # the byte tokenizer: one token per character, plus the start token
    rc = cli.main(["generate", "--model", str(root / "model"), "--prompt", "a" * 600])
    one_error_line(capsys, rc, "601", "512")
    rc = cli.main(["generate", "--model", str(root / "model"), "--prompt", "a" * 480, "--max-new-tokens", "40"])
    one_error_line(capsys, rc, "481", "40", "512")
    rc = cli.main(["generate", "--model", str(root / "model"), "--prompt", "a" * 480, "--max-new-tokens", "3",
                   "--num-beams", "1"])
    assert rc == 0, capsys.readouterr().err


def test_score_continuations_refuses_past_the_context(tiny_model):
    with pytest.raises(ValueError, match="512"):
        tiny_model.score_continuations(torch.ones(1, 500, dtype=torch.long), [[65] * 20])


def test_chat_refuses_a_turn_past_the_context_and_goes_on(root, monkeypatch, capsys):
    script = f"{'a' * 600}\nhello\n/quit\n"
    rc, out = chat(root, script, monkeypatch, capsys)
    assert rc == 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "512" in errors[0]
    assert out.count("Assistant:") == 1  # the next turn is answered, without the refused one


def test_chat_literal_image_marker_is_an_error_line(root, monkeypatch, capsys):
    rc, out = chat(root, "what is <image> here?\nhello\n/quit\n", monkeypatch, capsys)
    assert rc == 0
    assert sum(line.startswith("error:") for line in out.splitlines()) == 1 and out.count("Assistant:") == 1


# ---------------------------------------------------------------- broken saved models


def test_truncated_weights_are_one_line(root, capsys):
    bad = broken_copy(root, "truncated")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    rc = cli.main(["generate", "--model", str(bad), "--prompt", "x"])
    one_error_line(capsys, rc, str(bad / "model.safetensors"))
    (bad / "model.safetensors").write_bytes(data[:100])  # the header cut
    rc = cli.main(["generate", "--model", str(bad), "--prompt", "x"])
    one_error_line(capsys, rc, str(bad / "model.safetensors"))


def test_weights_of_another_shape_are_one_line(root, tmp_path, capsys):
    make_model(xattn_dim_head=8).save_pretrained(tmp_path / "other")
    bad = broken_copy(root, "mismatched")
    shutil.copy(tmp_path / "other" / "model.safetensors", bad / "model.safetensors")
    rc = cli.main(["generate", "--model", str(bad), "--prompt", "x"])
    one_error_line(capsys, rc, str(bad / "model.safetensors"), "expected")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"flamingo": {"num_latents": "eight"}}',
                                  '{"flamingo": {"no_such_field": 1}}', '{"flamingo": 3}'])
def test_bad_config_json_is_one_line_naming_it(root, text, capsys):
    bad = broken_copy(root, "badconfig")
    (bad / "config.json").write_text(text)
    rc = cli.main(["generate", "--model", str(bad), "--prompt", "x"])
    one_error_line(capsys, rc, str(bad / "config.json"))


# ---------------------------------------------------------------- an explicit LM replaces the preset's


@pytest.fixture(scope="module")
def local_gpt2(tmp_path_factory) -> Path:
    """A tiny GPT-2 with the byte tokenizer saved as a local folder: an LM named by path, offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from flamingo_core.tokenization import build_byte_tokenizer

    folder = tmp_path_factory.mktemp("lm") / "gpt2-tiny"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                               bos_token_id=256, eos_token_id=256)).save_pretrained(folder)
    build_byte_tokenizer().save_pretrained(folder)
    return folder


def test_lm_override_drops_the_presets_inline_lm():
    cfg = load_config("tiny", lm="gpt2")
    assert cfg.lm == "gpt2" and cfg.lm_config is None and cfg.tokenizer is None
    assert load_config("tiny", lm="gpt2", tokenizer="byte").tokenizer == "byte"  # given too: kept
    assert load_config("tiny").lm_config is not None  # no override: the preset's random LM


def test_lm_override_is_built_and_saved_as_built(local_gpt2, tmp_path):
    model = fc.create_model(load_config("tiny", lm=str(local_gpt2)))  # as `flamingo train --lm` does
    assert type(model.lm).__name__ == "GPT2LMHeadModel" and model.context_length == 128
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["flamingo"]
    assert saved["lm"] == str(local_gpt2) and saved["lm_config"] is None
    again = fc.Flamingo.from_pretrained(tmp_path / "saved")
    assert type(again.lm).__name__ == "GPT2LMHeadModel"
