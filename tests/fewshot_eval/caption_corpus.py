"""A seeded corpus of varied captions for checking the Python PTB tokenizer against the Java one.

Every kind of text the COCO caption evaluation meets or might: punctuation of every kind, currency, slashes,
hyphens and dashes, straight / curly / backtick quotes, contractions and other apostrophes, numbers, times,
dates, fractions, phone numbers, abbreviations (whose period may or may not also end the sentence), ellipses,
brackets, markup, non-ASCII letters (accents, Greek, Cyrillic, Hebrew, Arabic, Devanagari, CJK), symbols and
emoji, URLs, e-mail addresses, smileys, odd whitespace - mixed into ordinary caption sentences, plus
ShapesWorld's own captions when its generator is importable.
"""

from __future__ import annotations

import random

FRAGMENTS = {
    "currency": ["$1,000", "$ 5", "$3.50", "US$", "US$5", "US$ 20", "C$10", "A$", "€20", "20€", "£5", "¢", "50¢",
                 "¥100", "₹", "₤", "#1", "HK$", "$$", "$5m", "$1.5bn", "USD 5"],
    "slash": ["and/or", "w/o", "w/", "1/2", "24/7", "km/h", "a / b", "his/her", "on/off", "TCP/IP", "3/4-inch",
              "black/white/grey", "A/B", "/", "//", "yes/no/maybe", "x\\/y", "cat/dog-like", "n/a", "50/50"],
    "hyphen": ["black-and-white", "-", "--", "---", "----", "-----", "x-ray", "e-mail", "co-op", "pre-", "-5",
               "well-known", "state-of-the-art", "-LRB-", "-rrb-", "T-shirt", "U-turn", "anti-", "pro-", "re-enter",
               "20-year-old", "self-", "- -", "—", "–", "―", "&mdash;", "&ndash;", "-ish", "o'-lantern",
               "‐", "‑", "_", "__init__", "snake_case", "a - b", "U.S.-based", "e-mails", "Mid-1990s"],
    "quote": ['"hello"', '"', "'", "''", "``", "`", "‘quoted’", "“quoted”", "«guillemets»", "„low“", "‚low‘",
              '"Stop!"', "'single'", "`backtick'", "``latex''", '""', "‹›", "&quot;x&quot;", "’", "‘", "“", "”",
              '"5"', '"$5"', "'A'", '"a dog"', "''a''", "‛", "‟"],
    "apostrophe": ["can't", "won't", "don't", "isn't", "o'clock", "'90s", "'60s", "rock 'n' roll", "y'all",
                   "ma'am", "it's", "dogs'", "James's", "man’s", "don’t", "I'm", "they're", "we've", "you'll",
                   "he'd", "Can't", "DON'T", "'tis", "'Tis", "'twas", "cannot", "Cannot", "gonna", "wanna", "gotta",
                   "lemme", "gimme", "O'Neil", "d'Artagnan", "l'eau", "cont'd", "c'mon", "li'l", "nat'l",
                   "somethin'", "ol'", "'em", "'cause", "'til", "'till", "nor'easter", "e'er", "s'mores",
                   "ev'ry", "Dunkin'", "shouldn't've", "y'know", "ain't", "'s", "'re", "n't", "'", "kids'",
                   "Jones'", "the '70s", "class of '99", "'99", "rock'n'roll", "it&apos;s", "Cap'n", "c'est",
                   "don`t", "can‘t", "o’clock", "hawai'i", "Hawaiʻi", "’90s", "'5", "'ll", "'d", "'m", "'ve"],
    "number": ["3.5", "1/2", "10:30", "1,000,000", "3rd", "2nd", "100%", "+5", "-3", "1990s", "5pm", "5 p.m.",
               "12/25/2020", "1-2-2003", "555-1234", "(555) 123-4567", "+1 555 123 4567", "1.5.2020",
               "192.168.1.1", "0.5", ".5", "5.", "1,5", "3x4", "2x", "4K", "1080p", "10 1/2", "2-1/2", "½", "¼",
               "¾", "⅓", "⅔", "⅕", "x²", "H₂O", "10⁶", "1e-5", "3:2", "12:30:45", "No. 5", "no. 5", "fig. 3",
               "Fig. 3", "ca. 1900", "pp. 12", "art. 5", "1st", "22nd", "#1", "007", "٣", "१२", "１２", "10-15",
               "5-star", "1.", "2)", "(3)", "3.14159", "-0.5", "+/-", "~5", "5km", "90°", "37°C", "1 000",
               "100,000.50", "1.000,50", "03/04/05", "555.123.4567", "555 1234", "20-30%"],
    "abbreviation": ["U.S.", "U.K.", "Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "e.g.", "i.e.", "etc.", "vs.", "St.",
                     "Jan.", "Sept.", "Inc.", "Co.", "Corp.", "Ltd.", "a.m.", "p.m.", "Ph.D.", "Jr.", "Sr.", "Mt.",
                     "Ave.", "Calif.", "Mass.", "Ill.", "Gen.", "Capt.", "Rev.", "U.S.A.", "A.", "B.", "I.", "Z.",
                     "a.k.a.", "cf.", "al.", "et al.", "approx.", "min.", "max.", "Bros.", "Blvd.", "Rd.", "Pty. Ltd.",
                     "Co. Ltd.", "Mon.", "Fri.", "Dept.", "Natl.", "Intl.", "vs", "Mr", "Dr", "US", "USA", "NASA",
                     "A.B.C.", "S.p.A.", "non-U.S.", "U.S.-U.K.", "Canada-U.S.", "C.D.s", "Ed.D.", "Esq.", "No.",
                     "Nos.", "Figs.", "Tex.", "Wash.", "Ore.", "Pa.", "Del.", "La.", "Ark.", "Az.", "mr.", "dr.",
                     "u.s.", "TREAS.", "Sq.", "Ft.", "Lt.", "Sgt.", "Inc.,", "etc.,", "etc.;", "Mr.:", "U.S.,"],
    "ellipsis": ["...", "…", ". . .", "....", ".....", "......", "..", ". .", ". . . .", "!..", "?...", "..!",
                 ".. .", "\u0085", "wait...", "and…"],
    "bracket": ["(a)", "[b]", "{c}", "<d>", "<b>", "</b>", "<br/>", "<br />", "<img src='x.png'>",
                '<a href="u">', "<!-- c -->", "<?xml?>", "( )", "()", "[]", "{}", "((nested))", "(see above)",
                "[sic]", "{x, y}", "<", ">", "<<", ">>", "<3", "-> ", "=>", "(1)", "(a.m.)", "(U.S.)", "(s)", "(es)",
                "&lt;", "&gt;", "&lt;x&gt;", "<x@y.com>", "&lt;a@b.org&gt;", "[[link]]", "{{tpl}}"],
    "non_ascii": ["café", "naïve", "Zürich", "São Paulo", "façade", "résumé", "Ångström", "Øresund", "Straße",
                  "İstanbul", "ŁÓDŹ", "Dvořák", "crème brûlée", "日本語", "中文字", "東京タワー", "한국어", "Ελληνικά",
                  "ΟΔΟΣ", "русский", "Москва", "עברית", "العربية", "हिन्दी", "ภาษาไทย", "Tiếng Việt", "ß",
                  "ﬁne", "Ｆｕｌｌ", "ｶﾀｶﾅ", "ǅ", "ĳ", "ʻokina", "e\u0301", "n\u0303o", "ǆ", "ɐ", "ȷ", "ɏ", "ħ",
                  "μ", "Ω", "Å", "ﾟ", "〜", "。", "、", "！", "？", "「引用」", "『」", "·", "•", "※", "–"],
    "symbol": ["😀", "👍🏽", "❤️", "☺", "★", "→", "°", "×", "÷", "±", "©", "®", "™", "§", "¶", "†", "‡", "‰",
               "∞", "≈", "≠", "√", "∑", "€", "¦", "¨", "¯", "¬", "µ", "♪", "♥", "☃", "⚽", "🐶", "🇺🇸", "👨‍👩‍👧",
               "*", "**", "***", "\\*", "#", "##", "@", "@@", "=", "==", "+", "++", "~", "^", "|", "||", "\\",
               "&", "&&", "&amp;", "&amp;amp;", "&nbsp;", "&#39;", "&eacute;", "&HT;", "%", "c++", "C++", "C#",
               "f#", "F#", "AT&T", "S&P", "R&D", "S&P-500", "S&Ls", "A&amp;B", "Q&A", "\x7f", "\u200b", "\ufeff",
               "\u00ad", "co\u00adop", "\u200e", "\x00", "¿", "¡", "‼", "⁇", "\u037e", "\u3002", "\u2044",
               "‖", "‗", "′", "″", "‴", "‸", "⁂", "℃", "№", "⅓", "∀", "⌘", "☎", "✓", "✗", "❖", "⬛"],
    "web": ["http://example.com", "https://www.a.org/x?y=1", "www.google.com", "example.net", "Google.com",
            "http://x.co/a_(b)", "https://t.co/abc.", "ftp://files.org", "a.b@c.com", "first.last@mail.co.uk",
            "x@y", "@user", "@user_1", "#hashtag", "#1", "#ÜberTag", "photo.jpg", "IMG_1234.JPG", "file.txt",
            "report.pdf", "index.html", "script.py", "archive.tar.gz", "www.site.edu/path/", "cnn.com/news",
            "mail@example.org.", "user@host.com,", "http://a.com/😀", "e-mail@x-y.com", "a.b.c", "v1.2.3",
            "node.js", "3.5mm", "www.x.co.uk"],
    "smiley": [":)", ":-)", ";-)", ":D", ":(", ":P", ":p", "=)", ":o)", ":'(", "<:)", ">:(", ":]", ":[", ":|",
               ":\\", ":@", ":{", "^_^", "(^_^)", "-_-", "o_O", "x_x", "^.^", "(-_-)", "(^-^)", "T_T", "<_<",
               "=D", "8)", ":*", ";)", "XD", "xD", "(:", "):"],
    "punct": ["!", "?", "?!", "!?", "!!!", "???", ",", ";", ":", ",,", ";;", "::", ".", ". .", "!.", "?.", ",.",
              "!,", "a,b", "a;b", "a:b", "a.b", "a!b", "a?b", "end.", "end!", "end?", "Yes!", "No?", "ok,",
              "(ok).", "ok).", "ok.)", "ok.\"", '"ok."', "'ok.'", "ok!\"", "ok;\"", "3.", "A.,", "U.S.!"],
    "space": ["  ", "   ", "\t", "\t\t", "\n", "\n\n", "\u00a0", "\u3000", "\u2002", "\u2009", " \t ", "\r", "\r\n",
              "\u2028", "\u2029", "\x0b", "\x0c"],
}
WORDS = ("a man woman dog cat two three people group of the on in with at by is are sitting standing riding "
         "red blue green big small wooden old young street table plate food pizza train bus car bike horse "
         "near next to under over front back field grass water beach ocean sky kitchen room bed phone laptop "
         "holding eating playing looking walking white black yellow orange brown pink purple large little").split()
STARTS = ["A", "The", "Two", "An", "Three", "Some", "This", "There", "He", "She", "It", "In", "At", "But", "If",
          "Mr.", "Ms.", "You", "We", "They", "One", "Many", "Here", "However", "According", "About", "So", "Such",
          "a", "the", "an", "THE", "AN", "Several", "<b>", "\"A", "(A"]  # fmt: skip
ENDS = [".", "", "!", "?", "...", " .", ".\"", "!\"", "\"", "'", ".)", ")", "..", "?!", ";", ":", ",", " "]


def _phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _sentence(rng: random.Random) -> str:
    """One caption-like sentence with 1-3 fragments glued in with the spacing they have in real text."""
    parts = [rng.choice(STARTS), _phrase(rng, rng.randint(1, 6))]
    for _ in range(rng.randint(1, 3)):
        frag = rng.choice(FRAGMENTS[rng.choice(list(FRAGMENTS))])
        glue = rng.choice([" ", " ", " ", "", ", ", " (", " -", "/", "\t", "  "])
        parts.append(glue + frag + rng.choice([" ", " ", "", ",", ".", ")", "'s"]) + _phrase(rng, rng.randint(0, 4)))
    return (" ".join(parts).replace("  ", " ") if rng.random() < 0.5 else " ".join(parts)) + rng.choice(ENDS)


def varied_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` captions: every fragment of ``FRAGMENTS`` once in a sentence, then random sentences (one or two per
    caption, sometimes all upper or lower case). Seeded: the same list on every machine."""
    rng = random.Random(seed)
    out = [f"{rng.choice(STARTS)} {_phrase(rng, 2)} {frag} {_phrase(rng, 2)}{rng.choice(ENDS)}"
           for frags in FRAGMENTS.values() for frag in frags]  # fmt: skip
    out += [frag for frags in FRAGMENTS.values() for frag in frags]  # each alone: a caption's edge cases
    while len(out) < n:
        text = _sentence(rng) + (" " + _sentence(rng) if rng.random() < 0.3 else "")
        r = rng.random()
        out.append(text.upper() if r < 0.05 else text.lower() if r < 0.1 else text)
    return out[:n]


def shapesworld_captions(n: int, seed: int = 0) -> list[str]:
    """Captions of every ShapesWorld kind (LTIP, noisy ALIGN alt-text, COCO, video), or [] without the generator."""
    try:
        import numpy as np

        from shapesworld.language import align_caption, ltip_caption, short_caption, video_caption
        from shapesworld.scene import sample_scene, sample_video_scene
    except ImportError:
        return []
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i in range(n):
        if i % 4 == 3:
            out.append(video_caption(rng, sample_video_scene(rng, 8)))
            continue
        scene = sample_scene(rng)
        out.append([ltip_caption, lambda r, s: align_caption(r, s)[0], short_caption][i % 4](rng, scene))
    return out
