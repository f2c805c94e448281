"""The model seen by the evaluator: a three-method protocol, and its implementation over flamingo_core.

Flamingo (Alayrac et al., arXiv 2204.14198) is evaluated by prompting: open-ended tasks generate text after
an interleaved prompt, close-ended tasks score candidate continuations, and RICES needs the frozen vision
encoder's pooled image embedding. ``EvalModel`` is exactly that surface, so the evaluator and its tests do not
depend on how the model is built; ``FlamingoEvalModel`` adapts a saved ``flamingo_core.Flamingo``.

A prompt is a list of items - strings, images (``PIL.Image.Image``) and videos (lists of PIL frames) - in
reading order; the model's processor puts an ``<image>`` token where each image or video occurs.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "EOC",
    "IMAGE_TOKEN",
    "EvalModel",
    "FlamingoEvalModel",
    "ModelLoadError",
    "Prompt",
    "PromptItem",
    "TokenCounter",
    "context_length",
    "model_identifier",
    "prompt_to_text",
    "resolve_device",
    "truncate_generation",
]

EOC = "<EOC>"
IMAGE_TOKEN = "<image>"
# the rate flamingo train reads video at (its VTP source, the paper's 1 FPS): a frame t seconds into a clip sits at
# trained frame t * TRAINED_FPS
TRAINED_FPS = 1.0
PromptItem = str | Image.Image | list[Image.Image]
Prompt = list[PromptItem]


class ModelLoadError(ValueError):
    """The model folder is missing or does not hold a model this package can load."""


@runtime_checkable
class EvalModel(Protocol):
    """What the evaluator needs from a model."""

    identifier: str  # stable name of the model, recorded in results
    # Optional ``encoder_identifier``: names the frozen vision encoder alone; RICES support features are cached
    # under it (falling back to ``identifier``), so checkpoints sharing an encoder share the cache.
    # Optional ``context_length: int | None`` and ``count_tokens(texts, continuation=False) -> list[int]``: with
    # both, every prompt is checked against the context before anything is generated.

    def generate(self, prompts: list[Prompt], max_new_tokens: int, num_beams: int = 3) -> list[str]:
        """Text generated after each prompt, cut at ``<EOC>`` / EOS (the stop token itself not included).

        A protocol other than the default (``protocols.PROTOCOLS``) also passes its decoding keywords:
        ``length_penalty``, ``min_new_tokens`` and ``stop_at_eos`` (False: only ``<EOC>`` stops)."""
        ...

    def loglikelihood(self, prefix: Prompt, continuations: list[str]) -> list[tuple[float, int]]:
        """(summed log-probability, token count) of each continuation after ``prefix``.

        The prefix is encoded once and its cache reused for every continuation.
        """
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """(N, D) L2-normalised pooled features from the frozen vision encoder (for RICES)."""
        ...


def prompt_to_text(prompt: Sequence[PromptItem]) -> str:
    """The prompt as the model's text sees it: every image or video replaced by ``<image>``."""
    return "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt)


def in_model_tokens(text: str, eoc_token: str) -> str:
    """A prompt's text with its chunk end ``<EOC>`` spelt as the model's own token (a converted OpenFlamingo
    model's is ``<|endofchunk|>``)."""
    return text.replace(EOC, eoc_token) if eoc_token != EOC else text


def truncate_generation(text: str, stop: Sequence[str] = (EOC,)) -> str:
    """Cut generated text at the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # what Flamingo.save_pretrained writes


def _model_files(model_dir: Path) -> tuple[Path, Path]:
    """The config and weights of a saved model folder, refusing a folder that lacks one."""
    config, weights = model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE
    if not config.is_file() or not weights.is_file():
        raise ModelLoadError(
            f"{model_dir}: not a Flamingo model folder (expected {CONFIG_FILE} and {WEIGHTS_FILE} written by "
            "Flamingo.save_pretrained)"
        )
    return config, weights


def model_identifier(model_dir: str | Path) -> str:
    """``flamingo:<folder name>:<hash>`` of a saved model, the hash over the CONTENT of its config and weights.

    Predictions are reused on ``--resume`` only under the same identifier, so it must change whenever the model
    does: a retrained model of the same architecture in a folder of the same name has the same file sizes, so
    sizes alone are not enough. The weights are streamed (they may be larger than memory).

    Raises:
        ModelLoadError: the folder lacks a file, or its ``config.json`` is not a JSON object (file named).
    """
    from contrastive_encoder.shared.readers import CorruptFileError, read_json

    model_dir = Path(model_dir)
    config, weights = _model_files(model_dir)
    try:
        read_json(config)
    except CorruptFileError as e:
        raise ModelLoadError(str(e)) from None
    h = hashlib.sha256()
    for f in (config, weights):
        h.update(f"{f.name}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return f"flamingo:{model_dir.resolve().name}:{h.hexdigest()[:16]}"


def resolve_device(device: str | None = None):
    """The ``torch.device`` to run on (CUDA when available by default), refusing one this machine lacks.

    Raises:
        ValueError: one line naming the device, instead of torch's traceback at the first ``.to(device)``.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {device!r}: not a torch device (expected e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA GPU is available to torch here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use --device cpu")
    return dev


def context_length(model) -> int | None:
    """The frozen LM's maximum positions (prompt + generated tokens), None when unknown."""
    n = getattr(model, "context_length", None)  # Flamingo.context_length; None for models that do not say
    return int(n) if n else None


def _lm_positions(lm_config) -> int | None:
    """``Flamingo.context_length`` read from the LM's config instead of the built LM (the same fields)."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(lm_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class TokenCounter:
    """Prompt lengths in tokens as a Flamingo processor encodes them, and the LM's context: all that checking
    prompts against the context needs, so that ``from_pretrained`` can do it before any weight is loaded.

    Args:
        tokenizer: the model's tokenizer, ``<image>`` / ``<EOC>`` added (``FlamingoProcessor`` adds them).
        doc_start_id: the token the processor puts before every sequence, or None.
        context_length: the LM's positions, or None when unknown (then nothing is checked).
    """

    def __init__(self, tokenizer, doc_start_id: int | None, context_length: int | None, eoc_token: str = EOC):
        self.tokenizer, self.doc_start_id, self.context_length = tokenizer, doc_start_id, context_length
        self.eoc_token = eoc_token

    def count_tokens(self, texts: list[str], continuation: bool = False) -> list[int]:
        """Tokens of each text as the model encodes it: a prompt's text (``prompt_to_text``, with the start
        token the processor adds) or a continuation scored after a prompt."""
        if not texts:
            return []
        ids = self.tokenizer([in_model_tokens(t, self.eoc_token) for t in texts],
                             add_special_tokens=not continuation)["input_ids"]
        start = 0 if continuation or self.doc_start_id is None else 1
        return [len(row) + start for row in ids]

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> TokenCounter:
        """The counter of a saved model from its ``config.json`` alone: the tokenizer it names (through
        ``FlamingoProcessor``, which adds the Flamingo tokens and picks the start token as the model does) and the
        LM's context from the LM's config (an inline ``lm_config``, or the named LM's ``config.json``), never the
        weights.

        Raises:
            ModelLoadError: the folder is not a saved model, its config is unreadable, or the tokenizer or the
            LM's config cannot be loaded (one line).
        """
        from contrastive_encoder.shared.readers import first_line

        model_dir = Path(model_dir)
        _model_files(model_dir)
        try:
            from flamingo_core import FlamingoProcessor, load_config
            from flamingo_core.tokenization import load_flamingo_tokenizer
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ModelLoadError(f"flamingo_core is not importable ({e}); install packages/flamingo_core") from e
        try:
            config = load_config(model_dir)
        except (OSError, ValueError) as e:
            raise ModelLoadError(first_line(e)) from None
        # as flamingo_core.create_model picks the tokenizer
        name = config.tokenizer or (config.lm if config.lm_config is None else None)
        try:
            if name is None:
                raise ValueError("a config with lm_config needs a 'tokenizer' name (e.g. 'byte')")
            processor = FlamingoProcessor(load_flamingo_tokenizer(name), None, config.media_token, config.eoc_token,
                                          doc_start_token=config.doc_start_token)  # fmt: skip
            lm_config = _lm_config(config)
        except (OSError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: a packaged LM's conversion
            raise ModelLoadError(f"{model_dir}: could not load the tokenizer or the LM's config ({first_line(e)})") from e
        return cls(processor.tokenizer, processor.doc_start_id, _lm_positions(lm_config), processor.eoc_token)


def _lm_config(config):
    """The transformers config of the frozen LM that ``flamingo_core`` builds for ``config`` (its ``_build_lm``)."""
    from transformers import AutoConfig

    if config.lm_config is not None:
        cfg = dict(config.lm_config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    from contrastive_encoder.shared.pretrained import _from_pretrained

    return _from_pretrained(AutoConfig, config.lm)  # the name resolution load_causal_lm uses, config file only


def _media_key(item) -> tuple:
    """Content key of an image or a video: the same pixels give the same visual tokens."""
    if isinstance(item, Image.Image):
        return (item.mode, item.size, hashlib.sha1(item.tobytes()).hexdigest())
    return tuple(_media_key(f) for f in item)


class FlamingoEvalModel:
    """``EvalModel`` over ``flamingo_core.Flamingo``.

    Each distinct image's (or video's) visual tokens - frozen encoder + Perceiver Resampler - are computed once
    and reused by every prompt it appears in (as a demonstration or a query), through ``media_tokens``.

    Args:
        model_dir: a folder written by ``Flamingo.save_pretrained``.
        device: torch device; CUDA when available by default.
        model: an already built ``Flamingo`` instead of a folder (tests, notebooks).
        cache_visual: reuse visual tokens across prompts (False: encode the pixels of every prompt).
        cache_size: visual-token entries kept (least recently used dropped first).
        feature_cache: the frozen encoder's outputs kept beyond this model (``flamingo_core.feature_cache``,
            installed with ``Flamingo.use_feature_cache``): a folder, reused by later runs over the same images and
            tower, or ``"memory"``; None (default): off. The resampler still runs on every miss of the visual-token
            cache. ``self.feature_cache`` is then the cache, its ``hits`` / ``misses`` the media items read from it
            / encoded.

    Raises:
        ModelLoadError: the folder does not hold a loadable model.
        ValueError: ``feature_cache`` is a folder written for another vision encoder, or a non-empty folder that
            is not a feature cache (one line naming it).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | None = None,
        model=None,
        cache_visual: bool = True,
        cache_size: int = 8192,
        feature_cache: str | Path | None = None,
    ):
        import torch

        self.device = resolve_device(device)  # before loading: a missing GPU is named before minutes of work
        if model is None:
            if model_dir is None:
                raise ModelLoadError("FlamingoEvalModel needs a model folder or a model")
            model_dir = Path(model_dir)
            self.identifier = model_identifier(model_dir)  # also checks the files and that config.json is JSON
            try:
                from flamingo_core import Flamingo
            except ImportError as e:  # pragma: no cover - depends on the installation
                raise ModelLoadError(f"flamingo_core is not importable ({e}); install packages/flamingo_core") from e
            from contrastive_encoder.shared.readers import first_line

            try:
                model = Flamingo.from_pretrained(model_dir)  # unreadable weights: readers' CorruptFileError (ValueError)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                # the first line only: torch's shape mismatches and the hub's errors run over many lines
                reason = first_line(e)
                raise ModelLoadError(f"{model_dir}: could not load the Flamingo model ({reason})") from e
        else:
            self.identifier = f"flamingo:{model_dir or 'in-memory'}:{getattr(model.config, 'name', '')}"
        self.model = model.to(self.device).eval()
        # the visual-token cache lives one run; this one spares the frozen tower in the next run (task, shots, ablation)
        self.feature_cache = None if feature_cache is None else self.model.use_feature_cache(
            None if str(feature_cache) == "memory" else feature_cache)  # "memory": as `flamingo train --feature-cache`
        self.processor = model.processor
        self.tokenizer = self.processor.tokenizer
        self.encoder_identifier = str(getattr(model.vision_encoder, "identifier", self.identifier))
        self.cache_visual, self.cache_size = cache_visual, cache_size
        self._visual_cache: OrderedDict = OrderedDict()
        self._placeholder = torch.zeros(3, 1, 1)  # stands for media already encoded
        self.context_length = context_length(model)
        self._counter = TokenCounter(self.tokenizer, getattr(self.processor, "doc_start_id", None), self.context_length,
                                     getattr(self.processor, "eoc_token", EOC))

    @property
    def max_length(self) -> int | None:
        """Former name of ``context_length``."""
        return self.context_length

    # ------------------------------------------------------------------ inputs
    def _visual(self, item):
        """(R, d) visual tokens of one image or video, from the cache when seen before. A video read at a rate
        (a ``Clip``, ``media.VideoSampling``) has its frames placed by their times on the trained time axis (the
        resampler interpolates its time embeddings between trained frames); other frame lists get the resampler's
        default places (consecutive trained frames, or spread over them when there are more)."""
        import torch

        times = getattr(item, "times", None)
        key = (_media_key(item), None if times is None else tuple(times))
        if key in self._visual_cache:
            self._visual_cache.move_to_end(key)
            return self._visual_cache[key]
        pixels = self.processor.media_to_tensor(item).to(self.device)  # (T, C, H, W)
        positions = None if times is None else torch.tensor(times) * TRAINED_FPS  # seconds -> trained frames
        with torch.inference_mode():
            tokens = self.model.encode_media(pixels[None, None], media_frame_positions=positions)[0, 0]  # (R, d)
        if self.cache_visual:
            self._visual_cache[key] = tokens
            if len(self._visual_cache) > self.cache_size:
                self._visual_cache.popitem(last=False)
        return tokens

    def count_tokens(self, texts: list[str], continuation: bool = False) -> list[int]:
        """See ``TokenCounter.count_tokens``."""
        return self._counter.count_tokens(texts, continuation)

    def _check_length(self, input_ids, extra: int) -> None:
        # a backstop: evaluate() checks every prompt before generating anything (check_prompt_lengths)
        if self.context_length is not None and input_ids.shape[1] + extra > self.context_length:
            raise ValueError(
                f"a prompt of {input_ids.shape[1]} tokens (+{extra} to generate or score) exceeds the language "
                f"model's context of {self.context_length} tokens; use fewer shots or shorter templates"
            )

    def _inputs(self, prompts: list[Prompt], padding_side: str) -> dict:
        import torch

        eoc = getattr(self.processor, "eoc_token", EOC)
        prompts = [[in_model_tokens(x, eoc) if isinstance(x, str) else x for x in p] for p in prompts]
        timed = any(getattr(x, "times", None) is not None for p in prompts for x in p)
        if not (self.cache_visual or timed):  # the pixel batch has no frame times: timed clips take the token path
            batch = self.processor(prompts, padding_side=padding_side)
            return {"media_tokens": None, **{k: (v.to(self.device) if v is not None else None) for k, v in batch.items()}}
        # Text through the processor with placeholders; media through the visual-token cache.
        batch = self.processor([[x if isinstance(x, str) else self._placeholder for x in p] for p in prompts],
                               padding_side=padding_side)  # fmt: skip
        out = {"input_ids": batch["input_ids"].to(self.device), "attention_mask": batch["attention_mask"].to(self.device),
               "media": None, "media_mask": None, "media_frame_mask": None, "media_tokens": None}  # fmt: skip
        media = [[x for x in p if not isinstance(x, str)] for p in prompts]
        n_max = max(len(m) for m in media)
        if n_max:
            rows = [[self._visual(x) for x in m] for m in media]
            first = next(t for row in rows for t in row)
            tokens = first.new_zeros(len(prompts), n_max, *first.shape)
            mask = torch.zeros(len(prompts), n_max, dtype=torch.bool, device=self.device)
            for i, row in enumerate(rows):
                for j, t in enumerate(row):
                    tokens[i, j], mask[i, j] = t, True
            out.update(media_tokens=tokens, media_mask=mask)  # (B, N_max, R, d), (B, N_max)
        return out

    # ------------------------------------------------------------------ EvalModel
    def generate(self, prompts: list[Prompt], max_new_tokens: int, num_beams: int = 3, length_penalty: float = 1.0,
                 min_new_tokens: int = 1, stop_at_eos: bool = True) -> list[str]:  # fmt: skip
        """Beam search (or greedy) after each prompt. By default the stop tokens are banned at the first step: an
        answer or a caption has at least one token (a trained model may close its chunk at once, and an empty
        prediction can never score)."""
        batch = self._inputs(prompts, "left")
        self._check_length(batch["input_ids"], max_new_tokens)
        stops = self.model.stop_token_ids if stop_at_eos else [self.model.eoc_token_id]
        new_ids = self.model.generate(
            batch["input_ids"], batch["attention_mask"], batch["media"], max_new_tokens=max_new_tokens,
            min_new_tokens=min(min_new_tokens, max_new_tokens), num_beams=num_beams, length_penalty=length_penalty,
            media_mask=batch["media_mask"], media_frame_mask=batch["media_frame_mask"],
            media_tokens=batch["media_tokens"], stop_token_ids=stops,
        )  # fmt: skip
        return self.processor.decode(new_ids.cpu(), stops)

    def loglikelihood(self, prefix: Prompt, continuations: list[str]) -> list[tuple[float, int]]:
        batch = self._inputs([prefix], "right")
        eoc = getattr(self.processor, "eoc_token", EOC)
        cont_ids = [self.tokenizer(in_model_tokens(c, eoc), add_special_tokens=False)["input_ids"]
                    for c in continuations]
        self._check_length(batch["input_ids"], max(len(c) for c in cont_ids))
        scores = self.model.score_continuations(
            batch["input_ids"], cont_ids, batch["media"], media_mask=batch["media_mask"],
            media_frame_mask=batch["media_frame_mask"], media_tokens=batch["media_tokens"],
        )  # fmt: skip
        return [(float(lp), int(n)) for lp, n in zip(scores.logprobs.tolist(), scores.num_tokens.tolist())]

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        encoder = self.model.vision_encoder
        pixels = torch.stack([encoder.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode():
            emb = encoder.embed(pixels)  # (N, D), L2-normalised by contract
        return emb.float().cpu().numpy()
