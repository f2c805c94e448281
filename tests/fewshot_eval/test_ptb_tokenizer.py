"""The Python PTB tokenizer equals the Java one that pycocoevalcap runs (stanford-corenlp 3.4.1, ``-preserveLines
-lowerCase``) token for token: on thousands of varied captions where Java and pycocoevalcap are installed, and
on fixed lines whose Java output is written here everywhere."""

import shutil
import subprocess
from pathlib import Path

import pytest
from caption_corpus import FRAGMENTS, shapesworld_captions, varied_captions

from fewshot_eval.metrics.ptb_tokenizer import LINE_BREAKS, PUNCTUATIONS, ptb_tokenize, ptb_tokenize_lines

INSTALL = "pip install pycocoevalcap && apt-get install -y default-jre-headless"

# Java's output on these lines, as one file (so the last two lines differ: see the module docstring).
JAVA_FIXED = [
    ("He paid $1,000 and/or US$5 for the 3/4-inch C# book.",
     "he paid $ 1,000 and/or us$ 5 for the 3/4-inch c# book ."),
    ("“Curly” ‘quotes’ and «guillemets» — with an em dash – and en dash… done",
     "`` curly '' ` quotes ' and `` guillemets '' -- with an em dash -- and en dash ... done"),
    ("The '90s, o'clock, rock 'n' roll, y'all, can't, cannot, gonna.",
     "the '90s , o'clock , rock 'n' roll , y' all , ca n't , can not , gon na ."),
    ("Mr. Smith met Dr. Jones at 10:30 a.m. on 12/25/2020 e.g. in the U.S.",
     "mr. smith met dr. jones at 10:30 a.m. on 12/25/2020 e.g. in the u.s. ."),
    ("A cat 😀 on a café table in 東京 at http://example.com/a?b=c (see foo@bar.com).",
     "a cat on a café table in 東京 at http://example.com/a?b=c -lrb- see foo@bar.com -rrb- ."),
    ("AT&T and S&P-500 at 1 1/2 ½ price; call (555) 123-4567 :) ^_^",
     "at&t and s&p-500 at 1\u00a01/2 1/2 price ; call -lrb-555-rrb-\u00a0123-4567 :-rrb- ^_^"),
    ("A photo of the letter B.", "a photo of the letter b ."),  # a capitalised "A " starts the next line
    ("A man riding a wave.", "a man riding a wave ."),
    ("A photo of the letter B.", "a photo of the letter b."),  # end of file
]  # fmt: skip


def test_fixed_lines_equal_the_java_output():
    assert ptb_tokenize_lines([raw for raw, _ in JAVA_FIXED], remove_punctuation=False) == [j for _, j in JAVA_FIXED]


def test_one_caption_is_tokenised_as_a_file_of_its_own_then_punctuation_dropped():
    assert ptb_tokenize("A photo of the letter B.") == "a photo of the letter b."
    assert ptb_tokenize("A man's dog, (big).") == "a man 's dog -lrb- big -rrb-"  # brackets survive, as in Java
    assert not {"''", "``", ",", "."} & set(ptb_tokenize('"Hello," she said.').split())


def test_line_breaks_inside_a_caption_do_not_shift_the_next_captions():
    lines = [f"a{br}b" for br in "\n" + LINE_BREAKS] + ["last caption"]
    assert ptb_tokenize_lines(lines) == ["a b"] * (1 + len(LINE_BREAKS)) + ["last caption"]


def test_corpus_is_large_and_covers_every_fragment():
    corpus = varied_captions(6000)
    assert len(corpus) == 6000 and len(set(corpus)) > 5000
    assert all(any(frag in c for c in corpus) for frags in FRAGMENTS.values() for frag in frags)


def _java_tokenize(lines: list[str], tmp: Path) -> list[str]:
    """pycocoevalcap's command line on ``lines`` as one file (one Java call), before punctuation removal."""
    tokenizer = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer", reason=f"needs pycocoevalcap: {INSTALL}")
    if shutil.which("java") is None:
        pytest.skip(f"needs Java for the reference tokenizer: {INSTALL}")
    jar = Path(tokenizer.__file__).parent / tokenizer.STANFORD_CORENLP_3_4_1_JAR
    path = tmp / "captions.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
    out = subprocess.run([*cmd, str(path)], capture_output=True, check=True).stdout.decode("utf-8")
    return [line.rstrip() for line in out.split("\n")]


def test_equals_java_token_for_token_on_thousands_of_varied_captions(tmp_path):
    lines = varied_captions(6000) + shapesworld_captions(1000)
    lines = [ln.replace("\n", " ").translate({ord(c): " " for c in LINE_BREAKS}) for ln in lines]  # as scored
    java = _java_tokenize(lines, tmp_path)
    ours = ptb_tokenize_lines(lines, remove_punctuation=False)
    assert len(java) == len(ours) == len(lines)
    mismatches = [(raw, j, p) for raw, j, p in zip(lines, java, ours) if j != p]
    assert not mismatches, f"{len(mismatches)} of {len(lines)} differ, e.g. {mismatches[:3]}"
    # and after pycocoevalcap's punctuation removal, which every metric sees
    removed = [" ".join(w for w in j.split(" ") if w not in PUNCTUATIONS) for j in java]
    assert ptb_tokenize_lines(lines) == removed


def test_equals_java_on_every_character_of_the_basic_plane(tmp_path):
    # each character between letters and alone: letter, digit, symbol, space or untokenizable, as Java's tables
    # (Unicode 6.2) have it, whatever Unicode version this Python knows
    chars = [chr(c) for c in range(1, 0x10000) if not 0xD800 <= c <= 0xDFFF and chr(c) not in "\n" + LINE_BREAKS]
    lines = [f"x{c}x {c}" for c in chars]
    assert ptb_tokenize_lines(lines, remove_punctuation=False) == _java_tokenize(lines, tmp_path)
