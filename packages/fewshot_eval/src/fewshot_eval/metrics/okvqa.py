"""OK-VQA answer stemming, as OpenFlamingo's ``ok_vqa_utils.OKVQAStemmer`` applies it to predictions.

Marino et al., "OK-VQA: A Visual Question Answering Benchmark Requiring External Knowledge" (arXiv 1906.00067).
OK-VQA v1.1 releases its answers stemmed (``answers[i].answer``; the raw text is in ``raw_answer``), so a
prediction is stemmed the same way before VQA accuracy compares it (with any ``vqa.SCORERS`` scorer). The
procedure: NLTK's ``word_tokenize`` and ``pos_tag``; then for each token, a fixed table of words the automatic
rules miss or get wrong (``MANUAL_MATCHES``), else a token ending in "ing" goes through WordNet's verb
lemmatiser, else a plural noun (tag ``NNS`` / ``NNPS``) through ``inflection.singularize``; the tokens are joined
with spaces (so the tokenisation shows: ``"don't"`` -> ``"do n't"``).

It needs the packages nltk and inflection (``pip install 'fewshot-eval[okvqa]'``) and three NLTK data sets,
which are never downloaded at run time: install them once with
``python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet``. ``check_stemmer`` says which is
missing, in one line, before an evaluation starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from fewshot_eval.metrics.vqa import vqa_accuracy

__all__ = ["MANUAL_MATCHES", "NLTK_DATA", "OKVQAStemmer", "check_stemmer", "okvqa_accuracy", "okvqa_stem"]

NLTK_DATA = ("punkt_tab", "averaged_perceptron_tagger_eng", "wordnet")
INSTALL_HINT = f"pip install 'fewshot-eval[okvqa]' and python -m nltk.downloader {' '.join(NLTK_DATA)}"

# Words the automatic rules miss or get wrong, with the form OK-VQA v1.1's stemmed answers use.
MANUAL_MATCHES = {
    "police": "police", "las": "las", "vegas": "vegas", "yes": "yes", "jeans": "jean", "hell's": "hell",
    "domino's": "domino", "morning": "morn", "clothes": "cloth", "are": "are", "riding": "ride",
    "leaves": "leaf", "dangerous": "danger", "clothing": "cloth", "texting": "text", "kiting": "kite",
    "firefighters": "firefight", "ties": "tie", "married": "married", "teething": "teeth", "gloves": "glove",
    "tennis": "tennis", "dining": "dine", "directions": "direct", "waves": "wave", "christmas": "christmas",
    "drives": "drive", "pudding": "pud", "coding": "code", "plating": "plate", "quantas": "quanta",
    "hornes": "horn", "graves": "grave", "mating": "mate", "paned": "pane", "alertness": "alert",
    "sunbathing": "sunbath", "tenning": "ten", "wetness": "wet", "urinating": "urine", "sickness": "sick",
    "braves": "brave", "firefighting": "firefight", "lenses": "lens", "reflections": "reflect",
    "backpackers": "backpack", "eatting": "eat", "designers": "design", "curiousity": "curious",
    "playfulness": "play", "blindness": "blind", "hawke": "hawk", "tomatoe": "tomato", "rodeoing": "rodeo",
    "brightness": "bright", "circuses": "circus", "skateboarders": "skateboard", "staring": "stare",
    "electronics": "electron", "electicity": "elect", "mountainous": "mountain", "socializing": "social",
    "hamburgers": "hamburg", "caves": "cave", "transitions": "transit", "wading": "wade", "creame": "cream",
    "toileting": "toilet", "sautee": "saute", "buildings": "build", "belongings": "belong",
    "stockings": "stock", "walle": "wall", "cumulis": "cumuli", "travelers": "travel", "conducter": "conduct",
    "browsing": "brows", "pooping": "poop", "haircutting": "haircut", "toppings": "top", "hearding": "heard",
    "sunblocker": "sunblock", "bases": "base", "markings": "mark", "mopeds": "mope",
    "kindergartener": "kindergarten", "pies": "pie", "scrapbooking": "scrapbook", "couponing": "coupon",
    "meetings": "meet", "elevators": "elev", "lowes": "low", "men's": "men", "childrens": "children",
    "shelves": "shelve", "paintings": "paint", "raines": "rain", "paring": "pare", "expressions": "express",
    "routes": "rout", "pease": "peas", "vastness": "vast", "awning": "awn", "boy's": "boy",
    "drunkenness": "drunken", "teasing": "teas", "conferences": "confer", "ripeness": "ripe",
    "suspenders": "suspend", "earnings": "earn", "reporters": "report", "kid's": "kid", "containers": "contain",
    "corgie": "corgi", "porche": "porch", "microwaves": "microwave", "batter's": "batter", "sadness": "sad",
    "apartments": "apart", "oxygenize": "oxygen", "striping": "stripe", "purring": "pure",
    "professionals": "profession", "piping": "pipe", "farmer's": "farmer", "potatoe": "potato",
    "emirates": "emir", "womens": "women", "veteran's": "veteran", "wilderness": "wilder",
    "propellers": "propel", "alpes": "alp", "charioteering": "chariot", "swining": "swine", "illness": "ill",
    "crepte": "crept", "adhesives": "adhesive", "regent's": "regent", "decorations": "decor",
    "rabbies": "rabbi", "overseas": "oversea", "travellers": "travel", "casings": "case", "smugness": "smug",
    "doves": "dove", "nationals": "nation", "mustange": "mustang", "ringe": "ring", "gondoliere": "gondolier",
    "vacationing": "vacate", "reminders": "remind", "baldness": "bald", "settings": "set", "glaced": "glace",
    "coniferous": "conifer", "revelations": "revel", "personals": "person", "daughter's": "daughter",
    "badness": "bad", "projections": "project", "polarizing": "polar", "vandalizers": "vandal",
    "minerals": "miner", "protesters": "protest", "controllers": "control", "weddings": "wed",
    "sometimes": "sometime", "earing": "ear",
}  # fmt: skip


class OKVQAStemmer:
    """The OK-VQA v1.1 stemming of one answer (module docstring); NLTK and inflection by default.

    Args:
        tokenize: text -> tokens (default ``nltk.tokenize.word_tokenize``).
        tag: tokens -> (token, Penn Treebank tag) pairs (default ``nltk.pos_tag``).
        lemmatize_verb: token -> its verb lemma (default WordNet's ``lemmatize(token, "v")``).
        singularize: plural noun -> singular (default ``inflection.singularize``).
    """

    def __init__(
        self,
        tokenize: Callable[[str], list[str]] | None = None,
        tag: Callable[[list[str]], list[tuple[str, str]]] | None = None,
        lemmatize_verb: Callable[[str], str] | None = None,
        singularize: Callable[[str], str] | None = None,
    ) -> None:
        if None in (tokenize, tag, lemmatize_verb):
            import nltk  # looked up at call time below, so that tests can stand in for its parts

            lemmatizer = nltk.stem.WordNetLemmatizer()
            tokenize = tokenize or (lambda text: nltk.tokenize.word_tokenize(text))
            tag = tag or (lambda tokens: nltk.pos_tag(tokens))
            lemmatize_verb = lemmatize_verb or (lambda word: lemmatizer.lemmatize(word, "v"))
        if singularize is None:
            import inflection

            singularize = inflection.singularize
        self.tokenize, self.tag, self.lemmatize_verb, self.singularize = tokenize, tag, lemmatize_verb, singularize

    def __call__(self, text: str) -> str:
        words = []
        for word, tag in self.tag(self.tokenize(text)):
            if word in MANUAL_MATCHES:  # the table first, before either rule
                word = MANUAL_MATCHES[word]
            elif word.endswith("ing"):
                word = self.lemmatize_verb(word)
            elif tag.startswith("NNS") or tag.startswith("NNPS"):
                word = self.singularize(word)
            words.append(word)
        return " ".join(words)


_DEFAULT: list[OKVQAStemmer] = []


def check_stemmer() -> OKVQAStemmer:
    """The default stemmer, tried once on a probe; a one-line ``ValueError`` naming what is missing."""
    if _DEFAULT:
        return _DEFAULT[0]
    try:
        stemmer = OKVQAStemmer()
        stemmer("dogs running")  # loads the three NLTK data sets
    except ModuleNotFoundError as e:
        raise ValueError(f"OK-VQA stemming needs the package {e.name}: {INSTALL_HINT}") from None
    except LookupError as e:
        found = re.search(r"Resource '?(\w+)'? not found", str(e))
        what = f"NLTK's data set {found.group(1)!r}" if found else f"NLTK's data ({', '.join(NLTK_DATA)})"
        raise ValueError(f"OK-VQA stemming needs {what}, not found on nltk.data.path: {INSTALL_HINT}") from None
    _DEFAULT.append(stemmer)
    return stemmer


def okvqa_stem(text: str) -> str:
    """``text`` stemmed as OK-VQA v1.1's answers are (``OKVQAStemmer`` with NLTK and inflection)."""
    return check_stemmer()(text)


def okvqa_accuracy(
    predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]], scorer: str = "official"
) -> tuple[float, dict[str, float]]:
    """``vqa.vqa_accuracy`` of the stemmed predictions against OK-VQA's (stemmed) answers."""
    stem = check_stemmer() if predictions else None
    return vqa_accuracy({k: stem(p) for k, p in predictions.items()}, answers, scorer)
