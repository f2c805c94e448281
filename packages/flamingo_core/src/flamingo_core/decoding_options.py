"""Decoding options of ``flamingo_core.generation.generate``: a ``transformers.GenerationConfig`` with keyword
options over it (the keywords win, as in transformers' ``generate``), Flamingo's defaults (stop at ``<EOC>`` or
EOS, pad with the tokenizer's pad), and a one-line error for each option that is out of range or cannot run with
the media context (contrastive search, assisted decoding, ...).

The decoding itself is transformers' (``GenerationMixin``), so every option means what it means there.
"""

from __future__ import annotations

import copy

from transformers import GenerationConfig
from transformers.generation import GenerationMode

__all__ = ["REFUSED_MODES", "SUPPORTED_MODES", "decoding_config"]

SUPPORTED_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH,
                   GenerationMode.BEAM_SAMPLE)
REFUSED_MODES = {
    GenerationMode.CONTRASTIVE_SEARCH: "contrastive search (penalty_alpha with top_k > 1)",
    GenerationMode.ASSISTED_GENERATION: "assisted decoding (prompt_lookup_num_tokens, assistant_early_exit, use_mtp)",
    GenerationMode.DOLA_GENERATION: "DoLa decoding (dola_layers)",
    GenerationMode.CONSTRAINED_BEAM_SEARCH: "constrained beam search (constraints, force_words_ids)",
    GenerationMode.GROUP_BEAM_SEARCH: "group beam search (num_beam_groups > 1)",
}
# options transformers knows that this generate cannot honour, with why
_REFUSED_OPTIONS = {
    "return_dict_in_generate": "generate returns the new token ids only",
    "output_scores": "generate returns the new token ids only",
    "output_logits": "generate returns the new token ids only",
    "output_attentions": "generate returns the new token ids only",
    "output_hidden_states": "generate returns the new token ids only",
    "prefill_chunk_size": "the prompt's media positions (phi) are found on the whole prompt at once",
    "token_healing": "it would rewrite the prompt's last tokens, media tokens included",
    "guidance_scale": "classifier-free guidance runs the model on a second prompt without the media",
    "is_assistant": "assisted decoding is not supported",
}

# arguments of transformers' generate (not config fields) that this generate does not take
_REFUSED_ARGUMENTS = {
    "assistant_model": "assisted decoding runs a second model without the media",
    "custom_generate": "it replaces the decoding loop (with code from the Hub)",
    "negative_prompt_ids": "classifier-free guidance runs the model on a second prompt without the media",
    "past_key_values": "generate starts from the prompt (the media context is built from it)",
    "inputs_embeds": "the prompt's <image> tokens place the media",
}


def _is_set(name: str, value) -> bool:
    if name == "guidance_scale":
        return value is not None and value != 1
    return value not in (None, False)


def decoding_config(generation_config: GenerationConfig | None, options: dict) -> GenerationConfig:
    """The config ``generate`` runs: a copy of ``generation_config`` (or transformers' defaults) updated with
    ``options``. Raises a one-line ``ValueError`` for an unknown option, a value out of range, or a mode or
    option that ``generate`` refuses."""
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise ValueError(f"generation_config must be a transformers.GenerationConfig, got "
                         f"{type(generation_config).__name__}")
    for name, what in _REFUSED_ARGUMENTS.items():
        if name in options:
            raise ValueError(f"{name} is not supported by Flamingo.generate: {what}")
    config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    values = {name: getattr(config, name, None) for name in _CHECKED} | options
    _check_values(values)
    try:
        unknown = config.update(**options)
    except ValueError as e:  # transformers' own validation: one line
        raise ValueError(" ".join(str(e).split())) from e
    if unknown:
        raise ValueError(f"unknown generate option(s) {sorted(unknown)}: expected transformers.GenerationConfig "
                         "fields (max_new_tokens, num_beams, do_sample, repetition_penalty, stop_strings, ...)")
    _check_mode(config)
    return config


_CHECKED = ("max_new_tokens", "min_new_tokens", "num_beams", "do_sample", "temperature", "top_k", "top_p",
            "repetition_penalty", "no_repeat_ngram_size", "num_return_sequences", "early_stopping")


def _check_values(v: dict) -> None:
    """Ranges, each named in one line (transformers would raise later, some only when the option is used)."""
    for name in ("max_new_tokens", "min_new_tokens", "no_repeat_ngram_size"):
        if v.get(name) is not None and not v[name] >= 0:
            raise ValueError(f"{name} must be >= 0, got {v[name]}")
    if v.get("num_beams") is not None and not v["num_beams"] >= 1:
        raise ValueError(f"num_beams must be >= 1, got {v['num_beams']}")
    if v.get("do_sample") and v.get("temperature") is not None and not v["temperature"] > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {v['temperature']}")
    if v.get("top_k") is not None and not v["top_k"] >= 0:
        raise ValueError(f"top_k must be >= 0 (0 = all tokens), got {v['top_k']}")
    if v.get("top_p") is not None and not 0 < v["top_p"] <= 1:  # top_p 0 keeps no token
        raise ValueError(f"top_p must be in (0, 1], got {v['top_p']}")
    if v.get("repetition_penalty") is not None and not v["repetition_penalty"] > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = none), got {v['repetition_penalty']}")
    if v.get("early_stopping") not in (None, True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {v['early_stopping']!r}")
    n, beams = v.get("num_return_sequences"), v.get("num_beams") or 1
    if n is not None:
        if not n >= 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {n}")
        if beams > 1 and n > beams:
            raise ValueError(f"num_return_sequences ({n}) must be <= num_beams ({beams}) for beam search")
        if beams == 1 and not v.get("do_sample") and n > 1:
            raise ValueError(f"num_return_sequences ({n}) > 1 needs sampling (do_sample=True) or beam search "
                             "(num_beams >= num_return_sequences)")


def _check_mode(config: GenerationConfig) -> None:
    mode = config.get_generation_mode()
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"{REFUSED_MODES.get(mode, mode)} is not supported by Flamingo.generate: use greedy, "
                         "sampling (do_sample), beam search (num_beams) or beam sampling")
    for name, why in _REFUSED_OPTIONS.items():
        if _is_set(name, getattr(config, name, None)):
            raise ValueError(f"{name} is not supported by Flamingo.generate: {why}")
    if config.cache_implementation not in (None, "dynamic"):
        raise ValueError(f"cache_implementation={config.cache_implementation!r} is not supported by "
                         "Flamingo.generate: the media context runs with the dynamic cache")
