"""Stanford's PTBTokenizer as the COCO caption evaluation runs it, in Python: no Java needed.

``pycocoevalcap`` (the COCO caption evaluation, Chen et al., "Microsoft COCO Captions: Data Collection and
Evaluation Server", arXiv 1504.00325) tokenises every caption with ``java -cp stanford-corenlp-3.4.1.jar
edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` on one file holding all captions of a call,
one per line, then drops the tokens in ``PUNCTUATIONS``. This module reproduces that tokenizer's output: its
lexer (``PTBLexer``, a JFlex scanner) with the options that command line sets - the default normalisations
(brackets to ``-LRB-``, quotes to ``` `` ``` / ``''``, dashes to ``--``, ellipses to ``...``, currency, fractions,
spaces inside a token to U+00A0), ``tokenizeNLs`` (a line break ends a line), ``untokenizable=firstDelete``
(an unknown character is dropped) - and ``-lowerCase`` applied to each token after lexing.

The lexer is JFlex's: at each position the rule with the longest match wins, a rule's trailing context
(``r1/r2``: ``r2`` must follow but is not part of the token) counting toward that length, and the earlier rule
wins a tie. ``_rules`` lists the rules in the scanner's order. The scanner is ``%caseless`` for literal text
but not for character classes (``[A]bout`` matches "About", not "about"), and it reads UTF-16: a character
outside the Basic Multilingual Plane (an emoji) is two untokenizable halves, so it is dropped. The
equivalence is checked token by token against the Java tokenizer in ``tests/fewshot_eval/test_ptb_tokenizer.py``.

Because one file holds all captions, a caption's last token can depend on the next line: ``"the letter B."``
followed by a line starting ``"A man"`` gives ``b`` (the period is split off before a capitalised sentence
start), but ``b.`` at the end of the file. ``ptb_tokenize_lines`` lexes lines together as pycocoevalcap does;
``ptb_tokenize`` tokenises one caption as a file of its own.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import regex

__all__ = ["LINE_BREAKS", "PUNCTUATIONS", "check_captions", "ptb_tokenize", "ptb_tokenize_lines",
           "tokenize_captions"]

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens removed after tokenisation. "-LRB-" and the other brackets
# never match once -lowerCase has made them "-lrb-": brackets survive, as in the reference.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
# Characters the Java lexer takes for a line break besides "\n" (which pycocoevalcap replaces by a space): left
# in a caption, each would start a new output line and shift every later caption onto the wrong image, so both
# scorers (``coco_caption``) replace them by a space first.
LINE_BREAKS = "\r\x0b\x0c\u2028\u2029"
_LINE_BREAK = re.compile(f"[{LINE_BREAKS}]")
_NEWLINE = object()  # the token the lexer returns for a line break (tokenizeNLs)


# --- character classes: JFlex's [:letter:], [:digit:], [:uppercase:] are Java's Character.isLetter /
# isDigit / isUpperCase over the Basic Multilingual Plane (the scanner reads UTF-16 code units)


# The scanner's tables are those of Unicode 6.2 (Java 8): BMP letters and digits assigned since then are not
# letters to it (observed on every BMP character against the Java tokenizer), and two Mongolian signs that
# Unicode 9 made combining marks still are.
_SINCE_UNICODE_6_2 = (
    "037F 0528-052F 0560 0588 05EF 0860-086A 0870-0887 0889-088E 08A1 08AD-08C9 0978 0980 09FC 0AF9 0C34 0C5A "
    "0C5D 0C80 0CDD 0D04 0D54-0D56 0D5F 0DE6-0DEF 0E86 0E89 0E8C 0E8E-0E93 0E98 0EA0 0EA8-0EA9 0EAC 13F5 "
    "13F8-13FD 16F1-16F8 170D 171F 1878 191D-191E 19B0-19C0 19C8-19C9 1B4C 1C80-1C8A 1C90-1CBA 1CBD-1CBF "
    "1CF2-1CF3 1CFA 2C2F 2C5F 312E-312F 31BB-31BF 4DB6-4DBF 9FCD-9FFF A698-A69D A78F A794-A79F A7AB-A7CD "
    "A7D0-A7D1 A7D3 A7D5-A7DC A7F2-A7F7 A8FD-A8FE A9E0-A9E4 A9E6-A9FE AA7E-AA7F AB30-AB5A AB5C-AB69 AB70-ABBF"
)  # 1C89-1C8A, A7CB-A7CD and A7DA-A7DC are Unicode 16's, for Pythons that know them
_LETTERS_IN_6_2 = frozenset([0x1885, 0x1886])


def _code_points(spec: str) -> frozenset[int]:
    out: set[int] = set()
    for item in spec.split():
        a, _, b = item.partition("-")
        out.update(range(int(a, 16), int(b or a, 16) + 1))
    return frozenset(out)


def _category(cp: int, newer: frozenset[int]) -> str:
    """The general category of ``cp`` as the scanner's Unicode 6.2 tables have it ("Cn": unassigned)."""
    if cp in _LETTERS_IN_6_2:
        return "Lo"
    return "Cn" if cp in newer else unicodedata.category(chr(cp))


def _class_of(categories: frozenset[str]) -> str:
    """The BMP code points of the given Unicode general categories, as the inside of a regex class."""
    ranges: list[list[int]] = []
    newer = _code_points(_SINCE_UNICODE_6_2)
    for cp in range(0x10000):
        if _category(cp, newer) in categories:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(f"\\u{a:04X}" if a == b else f"\\u{a:04X}-\\u{b:04X}" for a, b in ranges)


def _ci(pattern: str) -> str:
    """JFlex's ``%caseless``: every ASCII letter outside a character class matches either case."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            width = 6 if pattern[i + 1] == "u" else 2
            out.append(pattern[i : i + width])
            i += width
        elif c == "[":  # copied as is: JFlex does not expand case inside classes
            j = i + 1
            while pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            out.append(pattern[i : j + 1])
            i = j + 1
        else:
            out.append(f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else c)
            i += 1
    return "".join(out)


# The extra letters PTBLexer adds to [:letter:] (combining marks, soft hyphen, ...), as its LETTER macro lists.
_EXTRA_LETTERS = (
    r"\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF"
    r"\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1"
    r"\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F"
    r"\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E"
    r"\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3"
    r"\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD"
    r"\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD"
)
_MISC_SYMBOLS = (
    r"+%&~\^|\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7\u0387\u05BE"
    r"\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D"
    r"\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u1FBD\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044"
    r"\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20"
    r"\uFF3B-\uFF40\uFF5B-\uFF65"
)
_ABBREVIATION_WORDS = (  # sentence starts after which an acronym's period is also a full stop
    "[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|[H]ere|[H]owever|"
    "[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he|[S]ince|[S]o|"
    "[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[Y]et|"
    "[Y]ou"
)


def _macros() -> dict[str, str]:
    """PTBLexer's named expressions in Python regex syntax (before ``_ci``), each a non-capturing group."""
    letters = _class_of(frozenset({"Lu", "Ll", "Lt", "Lm", "Lo"}))
    digits = _class_of(frozenset({"Nd"}))
    m: dict[str, str] = {"L": f"[{letters}]", "D": f"[{digits}]", "LD": f"[{letters}{digits}]",
                         "UPPER": f"[{_class_of(frozenset({'Lu'}))}]"}  # fmt: skip

    def add(name: str, pattern: str) -> None:
        m[name] = "(?:" + pattern.format(**m) + ")"

    add("SGML", r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*|"
        r"[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>")
    add("SPMDASH", r"&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]")
    add("SPAMP", r"&amp;")
    add("SPPUNC", r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);")
    add("SPLET", r"&[aeiouAEIOU](?:acute|grave|uml);")
    add("SPACE", r"[ \t\u00A0\u2000-\u200A\u3000]")
    add("NEWLINE", r"\r|\r?\n|\u2028|\u2029|\u000B|\u000C|\u0085")
    add("SPACENL", r"{SPACE}|{NEWLINE}")
    add("SENTEND", r"{SPACENL}(?:{SPACENL}|{UPPER}|{SGML})")
    add("DIGIT", f"[{digits}" r"\u07C0-\u07C9]")
    add("DATE", r"{DIGIT}{{1,2}}[\-/]{DIGIT}{{1,2}}[\-/]{DIGIT}{{2,4}}")
    add("NUMBER", r"[\-+]?(?:{DIGIT}+|{DIGIT}*(?:[.:,\u00AD\u066B\u066C]{DIGIT}+)+)")
    add("SUBSUPNUM", r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)")
    add("FRAC", r"(?:{DIGIT}{{1,4}}[\- \u00A0])?{DIGIT}{{1,4}}(?:\\?/|\u2044){DIGIT}{{1,4}}")
    add("LETTER", f"[{letters}{_EXTRA_LETTERS}]" "|{SPLET}")
    add("WORD", r"{LETTER}(?:{LETTER}|{DIGIT})*(?:[.!?]{LETTER}(?:{LETTER}|{DIGIT})*)*")
    add("FILENAME", r"(?:{LETTER}|{DIGIT})+(?:[.](?:{LETTER}|{DIGIT})+)*[.](?:bat|bmp|c|class|cgi|cpp|dll|doc|"
        r"docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)")
    add("APOS", r"['\u0092\u2019]|&apos;")
    add("APOSETC", r"{APOS}|[`\u0091\u2018\u201B]")
    add("HYPHEN", r"[\-_\u058A\u2010\u2011]")
    add("THING", r"(?:[dDoOlL]{APOSETC}{LD})?{LD}+(?:{HYPHEN}(?:[dDoOlL]{APOSETC}{LD})?{LD}+)*")
    add("THINGA", r"[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+")
    add("THING3", r"[A-Za-z0-9]+(?:-[A-Za-z]+){{0,2}}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){{0,2}}){{1,2}}")
    add("ACRO", r"[A-Za-z](?:\.[A-Za-z])*|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R)")
    add("ACRO2", r"[A-Za-z](?:\.[A-Za-z])+|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R)")
    add("HTHING", r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{ACRO2}\.))+")
    add("REDAUX", r"{APOS}(?:[msdMSD]|re|ve|ll)")
    add("SWORD", r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*")
    add("SREDAUX", r"n{APOSETC}t")
    add("APOWORD", r"{APOS}n{APOS}?|[lLdDjJ]{APOS}|Dunkin{APOS}|somethin{APOS}|ol{APOS}|{APOS}em|"
        r"[A-HJ-XZn]{APOSETC}{L}{{2}}{L}*|{APOS}[2-9]0s|{APOS}till?|{L}{L}*[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{L}*|"
        r"{APOS}cause|cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O{APOSETC}o")
    add("FULLURL", r"https?://[^ \t\n\f\r\"<>|(){{}}]+[^ \t\n\f\r\"<>|.!?(){{}},\-]")
    add("LIKELYURL", r"(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){{}},]+\.)+[a-zA-Z]{{2,4}}|"
        r"(?:[^ \t\n\f\r\"`'<>|.!?(){{}},-_$]+\.)+(?:com|net|org|edu))"  # ",-_" is a range, as in the original
        r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){{}},\-])?")
    add("EMAIL", r"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{{}}]*@(?:[^ \t\n\f\r\"<>|(){{}}.\u00A0]+\.)*"
        r"[^ \t\n\f\r\"<>|(){{}}.\u00A0]+(?:&gt;|>)?")
    add("TWITTER", r"@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+")
    add("ABBREV1", r"(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mon|Tue|Tues|Wed|Thu|Thurs|Fri|"
        r"Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn|"
        r"[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo|"
        r"Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys|tel|est|ext|sq|"
        r"Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq|etc|al|seq|Bldg)\.")
    add("ABBREV4", r"Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|"
        r"Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|"
        r"Mlle|Mme|Msgr|Sfc|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph|{ACRO}|Invt|Elec|Natl|M[ft]g|Dept")
    add("ABBREV3", r"(?:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\.")
    add("PHONE", r"(?:\([0-9]{{2,3}}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{{2,4}}[\- \u00A0])?[0-9]{{2,4}}[\- \u00A0])"
        r"[0-9]{{3,4}}[\- \u00A0]?[0-9]{{3,5}}|(?:(?:\+\+?)?[0-9]{{2,4}}\.)?[0-9]{{2,4}}\.[0-9]{{3,4}}\.[0-9]{{3,5}}")
    add("LDOTS", r"\.{{3,5}}|(?:\.[ \u00A0]){{2,4}}\.|[\u0085\u2026]")
    add("INSENTP", r"[,;:\u3001]")
    add("QUOTES", r"{APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039"
        r"\u203A\u00AB\u00BB]{{1,2}}")
    add("DBLQUOT", r"\"|&quot;")
    add("TBSPEC", r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls|"
        r"Cap{APOS}n|c{APOS}est")
    add("SMILEY", r"[<>]?[:;=][\-o*']?[()DPdpO\\{{@|\[\]]")
    # the first alternative reads ".[^x=~<>]" literally: the original escapes its class's opening bracket
    add("ASIANSMILEY", r"[\^x=~<>]\.\[\^x=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|"
        r"\([\^x=~<>']-[\^x=~<>'`]\)")
    return m


# --- the normalisations PTBLexer's actions apply (its defaults: ptb3Escaping without slash escaping)

_QUOTE_MAPS = [(re.compile("[\u0091\u2018\u201b\u2039]"), "`"), (re.compile("[\u0092\u2019\u203a]"), "'"),
               (re.compile("[\u0093\u201c\u00ab]"), "``"), (re.compile("[\u0094\u201d\u00bb]"), "''")]  # fmt: skip
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_AMP = re.compile("&amp;", re.IGNORECASE)
_BRACKETS = {"{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-", "(": "-LRB-", ")": "-RRB-"}


def _quotes(left: bool) -> Callable[[str], str]:
    """``latexQuotes``: straight quotes by the side the rule guessed, curly ones by their shape."""

    def convert(tok: str) -> str:
        tok = re.sub("&apos;|'", "`" if left else "'", tok)
        tok = re.sub('"|&quot;', "``" if left else "''", tok)
        for pattern, repl in _QUOTE_MAPS:
            tok = pattern.sub(repl, tok)
        return tok

    return convert


def _soft(tok: str) -> str:
    """Soft hyphens (U+00AD) are line-breaking hints: removed, unless nothing else is left."""
    return tok.replace("\u00ad", "") or "-"


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


def _nbsp(tok: str) -> str:
    return tok.replace(" ", "\u00a0")


# An action maps the rule's token text to (token or None for nothing, characters consumed): the consumed count
# is smaller than the text where the original pushes characters back to be lexed again.
Action = Callable[[str], tuple]


def _emit(fn: Callable[[str], str] = str) -> Action:
    return lambda tok: (fn(tok), len(tok))


def _push_back(n: int) -> Action:
    return lambda tok: (tok[:-n], len(tok) - n)


def _period_again(tok: str) -> tuple:
    """An abbreviation that also ends the sentence: the token keeps its period, which is lexed again."""
    return tok, len(tok) - 1


def _acronym(tok: str) -> tuple:
    """``{ACRONYM}`` before a sentence start: a one-letter "I." loses its period, a longer one keeps it too."""
    return (tok[0], 1) if len(tok) == 2 else (tok, len(tok) - 1)


_SKIP: Action = lambda tok: (None, len(tok))  # noqa: E731 - spaces, DEL, zero-width characters
_LINE: Action = lambda tok: (_NEWLINE, len(tok))  # noqa: E731


@dataclass(frozen=True)
class _Rule:
    """One scanner rule: ``body`` is the token, ``context`` what must follow it (JFlex ``body/context``)."""

    body: str
    context: str | None
    action: Action


def _rule_list(m: dict[str, str]) -> list[_Rule]:
    """PTBLexer's rules for the default state, in its order (the earlier rule wins a tie)."""
    R = _Rule
    brackets = [R(re.escape(b), None, _emit(lambda t: _BRACKETS[t])) for b in "{}[]()"]
    return [
        R(r"c\+\+", None, _emit()), R("(?:c|f)#", None, _emit()),
        R("cannot", None, _push_back(3)), R("'twas", None, _push_back(3)), R("'tis", None, _push_back(2)),
        R("gonna|gotta|lemme|gimme|wanna", None, _push_back(2)),
        R(m["SGML"], None, _emit(_nbsp)), R(m["SPMDASH"], None, _emit(lambda t: "--")),
        R(m["SPAMP"], None, _emit(lambda t: "&")), R(m["SPPUNC"], None, _emit()),
        R(m["WORD"], m["REDAUX"], _emit(_soft)), R(m["SWORD"], m["SREDAUX"], _emit(_soft)),
        R(m["WORD"], None, _emit(_soft)), R(m["APOWORD"], None, _emit()), R(r"y" + m["APOS"], m["L"], _emit()),
        R(m["FULLURL"], None, _emit()), R(m["LIKELYURL"], None, _emit()), R(m["EMAIL"], None, _emit()),
        R(m["TWITTER"], None, _emit()),
        R(m["REDAUX"], "[^A-Za-z]", _emit(_quotes(False))), R(m["SREDAUX"], "[^A-Za-z]", _emit(_quotes(False))),
        R(m["DATE"], None, _emit()), R(m["NUMBER"], None, _emit(_soft)), R(m["SUBSUPNUM"], None, _emit()),
        R(m["FRAC"], None, _emit(_nbsp)),
        R("[\u00bc\u00bd\u00be\u2153-\u215e]", None, _emit(lambda t: _FRACTIONS.get(t, t))),
        R(m["TBSPEC"], None, _emit(lambda t: _AMP.sub("&", t))), R(m["THING3"], None, _emit()),
        R(r"[A-Z]*\$|#", None, _emit()),
        R("[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", None,
          _emit(lambda t: _CURRENCY.get(t, t))),
        R(m["ACRO"] + r"\.", "(?:{SPACENL})+(?:{W}|{SGML}){SPACENL}".format(W=_ABBREVIATION_WORDS, **m), _acronym),
        R(m["ABBREV3"], "(?:{SPACENL})?{D}".format(**m), _emit()),
        R(r"(?:pt[eyEY]|co)\.", m["SPACE"] + "(?:ltd|lim)", _emit()),
        R(m["ABBREV1"], m["SENTEND"], _period_again), R(m["ABBREV1"], r"[\s\S][\s\S]", _emit()),
        R(m["ABBREV1"], None, _period_again),
        R(m["ABBREV4"] + r"\.", None, _emit()), R(m["ABBREV4"], m["SPACE"], _emit()),
        R(m["ACRO"], m["SPACENL"], _emit()), R(m["APOS"] + "[0-9][0-9]", m["SPACENL"], _emit()),
        R(m["FILENAME"], "{SPACENL}|[.?!,]".format(**m), _emit()), R(m["WORD"] + r"\.", m["INSENTP"], _emit(_soft)),
        R(m["PHONE"], None, _emit(lambda t: _parens(_nbsp(t)))),
        R(m["DBLQUOT"], "[A-Za-z0-9$]", _emit(_quotes(True))), R(m["DBLQUOT"], None, _emit(_quotes(False))),
        R("\x7f", None, _SKIP), R("<|&lt;", None, _emit(lambda t: "<")), R(">|&gt;", None, _emit(lambda t: ">")),
        R(m["SMILEY"], "[^A-Za-z0-9]", _emit(_parens)), R(m["ASIANSMILEY"], None, _emit(_parens)),
        *brackets,
        R(r"-+", None, _emit(lambda t: "--" if 3 <= len(t) <= 4 else t)),
        R(m["LDOTS"], None, _emit(lambda t: "...")),
        R("@+|#+|_+", None, _emit()), R(r"\*+|(?:\\\*){1,3}", None, _emit()), R(m["INSENTP"], None, _emit()),
        R("[?!]+", None, _emit()), R("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", None, _emit()),
        R("=", None, _emit()), R("/", None, _emit()),
        R(m["HTHING"] + r"\.", m["INSENTP"], _emit(_soft)), R(m["HTHING"], None, _emit(_soft)),
        R(m["THING"] + r"\.", m["INSENTP"], _emit()), R(m["THING"], None, _emit()),
        R(m["THINGA"] + r"\.", m["INSENTP"], _emit(lambda t: _AMP.sub("&", t))),
        R(m["THINGA"], None, _emit(lambda t: _AMP.sub("&", t))),
        R("'", "[A-Za-z][^ \t\n\r\u00a0]", _emit(_quotes(True))),
        R(m["REDAUX"], None, _emit(_quotes(False))), R(m["SREDAUX"], None, _emit(_quotes(False))),
        R(m["QUOTES"], None, _emit(_quotes(False))), R("<<|>>", None, _emit()), R(f"[{_MISC_SYMBOLS}]", None, _emit()),
        R("\x00|(?:{SPACE})+|[\u200b\u200e\u200f\ufeff]".format(**m), None, _SKIP),
        R(m["NEWLINE"], None, _LINE), R("&nbsp;", None, _SKIP),
        R("[^\n]", None, _SKIP),  # untokenizable: dropped (the Java tokenizer logs the first one)
    ]  # fmt: skip


@dataclass(frozen=True)
class _Compiled:
    pattern: regex.Pattern  # body then context; group 1 is the body where there is a context
    has_context: bool
    action: Action


@functools.cache
def _rules() -> tuple[_Compiled, ...]:
    """The rules compiled for leftmost-longest (POSIX) matching, as a JFlex DFA matches each one."""
    out = []
    for r in _rule_list(_macros()):
        text = _ci(r.body if r.context is None else f"({r.body})(?:{r.context})")
        out.append(_Compiled(regex.compile(text, regex.POSIX | regex.V0), r.context is not None, r.action))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _candidates(c: str) -> tuple[_Compiled, ...]:
    """The rules whose match can start with character ``c`` (the others are not tried there)."""
    return tuple(r for r in _rules() if r.pattern.match(c, partial=True))


# A run of ASCII letters before a space is one token whatever the rules (the longer rules need a period,
# digit or other mark); the exceptions are the words split by the assimilation rules.
_PLAIN = re.compile(r"[A-Za-z]+(?=[ \t\n]|\Z)")
_ASSIMILATIONS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _utf16(text: str) -> str:
    """Characters outside the BMP as their two UTF-16 halves, which is what the Java scanner reads."""
    def halves(m: re.Match) -> str:
        v = ord(m.group()) - 0x10000
        return chr(0xD800 + (v >> 10)) + chr(0xDC00 + (v & 0x3FF))

    return _ASTRAL.sub(halves, text)


def _lex(text: str) -> list:
    """The scanner's tokens of ``text`` (``_NEWLINE`` for each line break), before lower-casing."""
    text = _utf16(text)
    tokens: list = []
    pos, n = 0, len(text)
    while pos < n:
        plain = _PLAIN.match(text, pos)
        if plain is not None and plain.group().lower() not in _ASSIMILATIONS:
            tokens.append(plain.group())
            pos = plain.end()
            continue
        best, best_len, best_match = None, 0, None
        for rule in _candidates(text[pos]):
            match = rule.pattern.match(text, pos)
            if match is not None and match.end() - pos > best_len:
                best, best_len, best_match = rule, match.end() - pos, match
        if best is None:  # "\n" under no rule but NEWLINE never happens; a guard against a broken table
            raise AssertionError(f"no PTB rule matches {text[pos]!r}")
        token, consumed = best.action(best_match.group(1) if best.has_context else best_match.group())
        if token is not None:
            tokens.append(token)
        pos += consumed
    return [t if t is _NEWLINE or not _has_surrogate(t) else _join_halves(t) for t in tokens]


def _has_surrogate(tok: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in tok)


def _join_halves(tok: str) -> str:
    """A token that kept both halves of a character (a URL with an emoji) writes it whole, as Java's UTF-8."""
    return tok.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _finish(tokens: list[str], remove_punctuation: bool) -> str:
    """pycocoevalcap's post-processing of one output line: lower-cased tokens, punctuation dropped."""
    line = " ".join(t.lower() for t in tokens)
    if not remove_punctuation:
        return line
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def ptb_tokenize_lines(lines: Sequence[str], remove_punctuation: bool = True) -> list[str]:
    """Tokenise captions as pycocoevalcap's ``PTBTokenizer.tokenize`` does: one file, one caption a line.

    Args:
        lines: raw captions; a "\\n" inside one becomes a space (as in pycocoevalcap), and so do the other line
            breaks of ``LINE_BREAKS`` (which pycocoevalcap would turn into extra lines).
        remove_punctuation: drop ``PUNCTUATIONS`` (pycocoevalcap does); False gives the Java tokenizer's lines.

    Returns:
        One string of space-separated lower-cased tokens per caption.
    """
    return list(_tokenize_lines(tuple(lines), remove_punctuation))


@functools.lru_cache(maxsize=8)  # an evaluation scores the same references once per shot count and trial
def _tokenize_lines(lines: tuple[str, ...], remove_punctuation: bool) -> tuple[str, ...]:
    text = "\n".join(_LINE_BREAK.sub(" ", line.replace("\n", " ")) for line in lines)
    out: list[list[str]] = [[]]
    for tok in _lex(text):
        if tok is _NEWLINE:
            out.append([])
        else:
            out[-1].append(tok)
    if len(out) != max(len(lines), 1):  # a guard: only LINE_BREAKS could split a line, and they are gone
        raise AssertionError(f"{len(lines)} captions gave {len(out)} tokenised lines")
    return tuple(_finish(toks, remove_punctuation) for toks in out[: len(lines)])


def check_captions(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[str]:
    """The ids of ``predictions``, each checked to have a caption and at least one reference caption (strings).

    Raises:
        ValueError: naming the first id that does not.
    """
    for i, pred in predictions.items():
        if i not in references:
            missing = [k for k in predictions if k not in references]
            raise ValueError(f"{len(missing)} predictions have no references, e.g. id {missing[0]!r}")
        refs = references[i]
        if isinstance(refs, str) or not refs:
            raise ValueError(f"image {i!r}: expected a list of at least one reference caption, got {refs!r}")
        if not isinstance(pred, str) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"image {i!r}: captions must be strings, got {pred!r} and {list(refs)!r}")
    return list(predictions)


def tokenize_captions(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], ids: Sequence[str],
                      tokenize: bool = True) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """The candidates and reference lists of ``ids``, tokenised as ``COCOEvalCap.evaluate`` does: every
    reference in one tokenizer call (image by image, in ``ids`` order), every prediction in another.

    Returns:
        (one candidate per image, the references of each image); as given when ``tokenize`` is False.
    """
    flat = [r for i in ids for r in references[i]]
    cands = [predictions[i] for i in ids]
    if tokenize:
        flat, cands = ptb_tokenize_lines(flat), ptb_tokenize_lines(cands)
    refs, pos = [], 0
    for i in ids:
        refs.append(flat[pos : pos + len(references[i])])
        pos += len(references[i])
    return cands, refs


@functools.lru_cache(maxsize=1 << 16)
def ptb_tokenize(text: str) -> str:
    """Tokenise one caption as pycocoevalcap would, alone in its file, then drop its punctuation tokens.

    Args:
        text: a raw caption.

    Returns:
        Lower-cased tokens joined by single spaces, e.g. ``"A man's dog, (big)."`` -> ``"a man 's dog -lrb- big
        -rrb-"``.
    """
    return ptb_tokenize_lines([text])[0]
