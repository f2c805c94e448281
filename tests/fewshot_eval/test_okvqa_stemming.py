"""OK-VQA answer stemming equals OpenFlamingo's ``ok_vqa_utils.OKVQAStemmer``; a missing package or NLTK data set
is one line naming it, before any data is read.

The peer comparison runs where OpenFlamingo (``bash benchmarks/peers/install_openflamingo.sh``), nltk and
inflection (``pip install 'fewshot-eval[okvqa]'``) are installed. NLTK's data sets cannot be installed from a
package registry, so the comparison stands the same deterministic tokenizer, tagger and lemmatiser in for
NLTK's on both sides (the procedure and the real ``inflection.singularize`` are compared); with the data sets
installed, the comparison with NLTK's own runs too.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

from fewshot_eval.metrics import okvqa
from fewshot_eval.metrics.okvqa import MANUAL_MATCHES, OKVQAStemmer, check_stemmer, okvqa_accuracy

ROOT = Path(__file__).resolve().parents[2]
PEER_UTILS = ROOT / "benchmarks" / ".peer-site" / "open_flamingo" / "eval" / "ok_vqa_utils.py"
INSTALL = "bash benchmarks/peers/install_openflamingo.sh"

WORDS = [*MANUAL_MATCHES, "dogs", "buses", "mice", "geese", "children", "people", "sheep", "glasses", "boxes",
         "skiing", "surfing", "playing tennis", "tennis rackets", "christmas trees", "hot dogs", "running shoes",
         "He is riding horses", "Frisbees", "Parking meters", "NFL teams", "sandwich", "yes", "2", "", "don't",
         "clothes and jeans", "kites flying", "the Beatles", "United States", "surfboards."]  # fmt: skip


def _fake_tokenize(text: str) -> list[str]:
    return text.replace(".", " .").split()


def _fake_tag(tokens: list[str]) -> list[tuple[str, str]]:
    """A stand-in tagger that exercises every branch: capitalised plurals NNPS, other plurals NNS."""
    return [(t, ("NNPS" if t[:1].isupper() else "NNS") if t.endswith("s") else "NN") for t in tokens]


def _fake_lemmatize(self, word: str, pos: str = "n") -> str:
    return word[:-3] + ("e" if pos == "v" else "") if word.endswith("ing") else word


def _ours_with_fakes() -> OKVQAStemmer:
    import inflection

    return OKVQAStemmer(_fake_tokenize, _fake_tag, lambda w: _fake_lemmatize(None, w, "v"), inflection.singularize)


def _peer_stemmer():
    if not PEER_UTILS.is_file():
        pytest.skip(f"OpenFlamingo is not installed in benchmarks/.peer-site: run `{INSTALL}`")
    pytest.importorskip("nltk", reason="pip install 'fewshot-eval[okvqa]'")
    pytest.importorskip("inflection", reason="pip install 'fewshot-eval[okvqa]'")
    spec = importlib.util.spec_from_file_location("_peer_ok_vqa_utils", PEER_UTILS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.stemmer


def _nltk_data_present() -> bool:
    try:
        OKVQAStemmer()("dogs running")
    except (LookupError, ImportError):
        return False
    return True


def test_procedure_table_then_ing_then_plural_nouns():
    stem = OKVQAStemmer(str.split, _fake_tag, lambda w: w[:-3], lambda w: w[:-1])
    assert stem("clothes") == "cloth"  # the table wins over the plural rule
    assert stem("riding") == "ride" and stem("running") == "runn"  # the table, then the "ing" rule
    assert stem("dogs Cats dog") == "dog Cat dog"  # NNS and NNPS singularised, others kept
    assert stem("tennis") == "tennis" and stem("") == ""


def test_equals_openflamingo_with_the_same_nlp_parts(monkeypatch):
    peer = _peer_stemmer()
    import nltk

    monkeypatch.setattr(nltk.tokenize, "word_tokenize", _fake_tokenize)
    monkeypatch.setattr(nltk, "pos_tag", _fake_tag)
    monkeypatch.setattr(nltk.stem.WordNetLemmatizer, "lemmatize", _fake_lemmatize)
    ours = OKVQAStemmer()  # nltk's parts, looked up at call time: the stand-ins
    bad = [(w, ours(w), peer.stem(w)) for w in WORDS if ours(w) != peer.stem(w)]
    assert not bad, f"{len(bad)} of {len(WORDS)} differ from OpenFlamingo's stemmer, e.g. {bad[0]}"
    assert ours("kites flying") == _ours_with_fakes()("kites flying") == "kite flye"


def test_equals_openflamingo_with_nltk_data():
    peer = _peer_stemmer()
    if not _nltk_data_present():
        pytest.skip(f"NLTK data not installed: python -m nltk.downloader {' '.join(okvqa.NLTK_DATA)}")
    ours = OKVQAStemmer()
    assert [ours(w) for w in WORDS] == [peer.stem(w) for w in WORDS]


def test_accuracy_stems_the_prediction(monkeypatch):
    monkeypatch.setattr(okvqa, "_DEFAULT", [OKVQAStemmer(str.split, _fake_tag, lambda w: w, lambda w: w[:-1])])
    mean, per_q = okvqa_accuracy({"1": "dogs", "2": "cats"}, {"1": ["dog"] * 10, "2": ["cats"] * 10})
    assert per_q == {"1": 1.0, "2": 0.0} and mean == 0.5


def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.setattr(okvqa, "_DEFAULT", [])
    monkeypatch.setitem(sys.modules, "nltk", None)  # import nltk now fails as if not installed
    with pytest.raises(ValueError, match=r"needs the package nltk: pip install 'fewshot-eval\[okvqa\]'") as e:
        check_stemmer()
    assert "\n" not in str(e.value)


def test_missing_nltk_data_is_one_line(monkeypatch):
    pytest.importorskip("nltk")
    pytest.importorskip("inflection")
    if _nltk_data_present():
        pytest.skip("NLTK's data sets are installed here")
    monkeypatch.setattr(okvqa, "_DEFAULT", [])
    with pytest.raises(ValueError, match="NLTK's data set 'punkt_tab', not found on nltk.data.path") as e:
        check_stemmer()
    assert "\n" not in str(e.value) and "python -m nltk.downloader punkt_tab" in str(e.value)


def test_okvqa_run_refused_before_the_data_is_read(monkeypatch, tmp_path, capsys):
    from fewshot_eval.cli import main

    monkeypatch.setattr(okvqa, "_DEFAULT", [])
    monkeypatch.setitem(sys.modules, "nltk", None)
    rc = main(["run", "--model", str(tmp_path), "--task", "okvqa", "--data", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "OK-VQA stemming needs the package nltk" in err
