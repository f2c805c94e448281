"""Novel-label ("nonce") classification: fast concept binding as in Frozen (Tsimpoukelli et al., "Multimodal
Few-Shot Learning with Frozen Language Models", arXiv 2106.13884, Sec. 4.1 "fast concept binding").

In a nonce episode every class of the set is renamed with a made-up word ("dax", "blicket") that the model has
never seen as a label: the demonstrations' answers and the scored candidates are these words, so the only way to
answer the query is to bind each word to the images it followed in this very prompt. The mapping is drawn fresh
for every (seed, trial, query id): a model cannot learn it across episodes, and a word carries no prior about
the class it names (the true names never appear in the prompt). A zero-shot nonce prompt is at chance by
construction: its two text-only demonstrations show words but no image to bind them to.

The built-in words are disjoint from the page-local names of the training generator (``tools/shapesworld/``),
which a test checks on the generated training files: a gain here measures reading the prompt, not memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewshot_eval.datasets import RESERVED_TOKENS, DataError
from fewshot_eval.selection import _stable_hash

__all__ = ["EVAL_NONCE_WORDS", "LABELS", "check_nonce_words", "nonce_names", "read_nonce_words"]

LABELS = ("true", "nonce")  # what a classification prompt calls the classes: their names, or nonce words

# Pronounceable, not English, not a shape, colour or size word, and none a single token of a common BPE
# vocabulary (SmolLM2's: each splits into 2-3 pieces, so no word comes with a meaning the LM already knows).
EVAL_NONCE_WORDS = (
    "dax", "blicket", "wug", "fep", "zav", "toma", "kiki", "gazzer", "bouba", "zorp", "fendle", "glorp", "mipen",
    "dofa", "zup", "vek", "tiv", "lorp", "snerp", "quaz", "zib", "jek", "wiv", "tepu", "yoff", "frip", "grelt",
    "jorb", "nerk", "pheb", "skoy", "vonk", "wemp", "yeb", "zindle", "blonk", "criv", "dulp", "gweb", "nopp",
    "prav", "quon", "zeft", "glimph", "hoxel", "loobie", "queb", "rindle", "spoff", "vibbet", "yimp", "zoober",
    "lirpa", "teeb", "wozzle", "fodo", "bimp", "keepa", "pogle", "vorn", "tulver", "gribe", "snoff", "kepo", "wux",
    "yoba", "zomble", "florp", "jindle", "klep", "mepo", "nusk", "plov", "reeb", "tesk", "ublo", "varp", "zelk",
)  # fmt: skip
BUILT_IN = "the built-in nonce words"
_STREAM = 0x6E6F6E63  # "nonc": keeps the renaming's random stream apart from the demonstrations' (same seed, trial, id)


def read_nonce_words(path: str | Path) -> tuple[str, ...]:
    """The words of ``--nonce-words``: a UTF-8 text file, one word per line (checked by ``check_nonce_words``).

    Raises:
        DataError: the file is missing or not UTF-8 text (one line naming it).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"--nonce-words {path}: no such file (expected a text file, one nonce word per line)") from None
    except UnicodeDecodeError as e:
        raise DataError(f"--nonce-words {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"--nonce-words {path}: cannot read it ({e.strerror or e})") from None
    return tuple(text.splitlines())


def check_nonce_words(words: Sequence[str], class_names: Sequence[str], data: object, source: str = BUILT_IN) -> None:
    """Refuse a word list that cannot rename every class of the set with its own word.

    Args:
        words: the candidate words (``EVAL_NONCE_WORDS`` or a file's lines).
        class_names: the set's classes.
        data: what the class names come from (named in the error).
        source: where the words come from (named in the error), e.g. ``--nonce-words words.txt``.

    Raises:
        DataError: one line naming the word (or its line) and the rule: an empty word or one with whitespace, a
        prompt marker, a word given twice (case-insensitively: the model would see one label for two
        classes), a word that is a class name (case-insensitively: it would leak that class), or fewer words
        than classes.
    """
    seen: dict[str, int] = {}
    for i, w in enumerate(words, start=1):
        if not w.strip():
            raise DataError(f"{source}: line {i} is empty; expected one nonce word per line")
        if any(c.isspace() for c in w):
            raise DataError(f"{source}: line {i} ({w!r}) holds whitespace; a nonce word is one word")
        marker = next((t for t in RESERVED_TOKENS if t in w), None)
        if marker:
            raise DataError(f"{source}: line {i} ({w!r}) holds the prompt marker {marker}")
        if w.lower() in seen:
            raise DataError(f"{source}: {w!r} on line {i} repeats line {seen[w.lower()]}; every class needs its own word")
        seen[w.lower()] = i
    names = {c.lower() for c in class_names}
    clash = next((w for w in words if w.lower() in names), None)
    if clash is not None:
        raise DataError(f"nonce word {clash!r} is a class name of {data} ({source}); choose words that are not")
    if len(words) < len(class_names):
        n, more = len(class_names), "; give more with --nonce-words" if source == BUILT_IN else ""
        raise DataError(f"{source}: {len(words)} words for {n} classes; need at least {n}{more}")


def nonce_names(class_names: Sequence[str], words: Sequence[str], seed: int, trial: int, query_id: str) -> dict[str, str]:
    """The episode's renaming, class name -> nonce word: distinct words drawn from ``words`` by a generator seeded
    with ``[seed, trial, _stable_hash(query_id), _STREAM]``, so that a query's episode does not depend on
    batching, process count or resumption, and differs between queries and trials."""
    rng = np.random.default_rng([seed, trial, _stable_hash(str(query_id)), _STREAM])
    picked = rng.choice(len(words), size=len(class_names), replace=False)
    return {c: words[int(i)] for c, i in zip(class_names, picked)}
