"""Clean stage: raw article -> clean article (or a rejected record).

Three layers of pure functions, fed to Beam through one DoFn:

* ``clean_text`` repairs text: mojibake (ftfy), literal escapes of invisible
  or space characters (``\\u200b`` written out as six characters), HTML
  entities, zero-width and control characters, whitespace runs; it keeps one
  paragraph per line and joins paragraphs with a blank line.
* ``clean_body`` applies the boilerplate rules to the paragraphs: photo
  credits and the captions they sign, bylines, datelines, promo headers,
  share/follow/newsletter/"You may like" lines, repeated paragraphs. Captions,
  author and publication time are recovered rather than thrown away.
* ``clean_article`` adds metadata (title, author, ISO-8601 ``published``) and,
  for HTML, main-content extraction with trafilatura first.
* ``count_words`` counts words as a reader would in every script (below).

The rules are data (``AGENCIES``, ``PROMO_WORDS``, ``TRAILER_LINES`` ... and
``LINE_RULES``), all in the "Boilerplate rules" section below; every line a
rule removes increments the counter ``clean:rule_<name>``, so a run's metrics
show what fired, and a rule is extended by editing its list.
"""

from __future__ import annotations

import datetime
import email.utils
import html
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import apache_beam as beam
import regex
from apache_beam.metrics import Metrics

from pipelines.records import rejected, sha256_hex, tag_rejected

__all__ = [
    "AGENCIES",
    "CleanArticles",
    "CleanBody",
    "DATE_ORDERS",
    "FTFY_OPTIONS",
    "LINE_RULES",
    "MAX_HTML_TAGS",
    "RULE_NAMES",
    "TRAFILATURA_OPTIONS",
    "clean_article",
    "clean_article_explained",
    "clean_body",
    "clean_text",
    "count_tags",
    "count_words",
    "has_unspaced_letter",
    "extract_html",
    "looks_like_markup",
    "markup_to_text",
    "normalise_for_hash",
    "paragraphs_of",
    "parse_published",
    "repair_text",
    "UNSPACED_LETTER",
]

STAGE = "clean"
REJECTED_TAG = "rejected"
DATE_ORDERS = ("DMY", "MDY", "YMD")

# ---------------------------------------------------------------------------
# Text repair
# ---------------------------------------------------------------------------

# Invisible format characters that glue onto words ("\u200bPutin") without
# being visible: zero-width space, word joiner, BOM, soft hyphen, bidi
# controls, Mongolian vowel separator, invisible math operators.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# Zero-width (non-)joiners spell Persian and Indic words and emoji sequences,
# so they stay between such characters; next to ASCII, a space or a line end
# they can only be scraping debris.
_STRAY_JOINER = re.compile(
    r"(?:^|(?<=[\x00-\x7f]))[\u200c\u200d]+|[\u200c\u200d]+(?=[\x00-\x7f]|$)", re.MULTILINE)
# C0/C1 controls except tab and newline, which carry layout.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029]")
_SPACES = re.compile(r"[^\S\n]+")
# A run of symbols with no letter, digit or space ("-----", "<<<<<<") is
# debris, never text, and spaCy's tokenizer splits one off at a time in
# quadratic time (4,000 "$" take 5.6 s, 32,000 "<" three minutes); cut to
# MAX_SYMBOL_RUN, it costs nothing.
MAX_SYMBOL_RUN = 64
_SYMBOL_RUN = re.compile(rf"[^\w\s]{{{MAX_SYMBOL_RUN + 1},}}")
# Escapes written out as text by a broken scraper or a double JSON encoding.
_LITERAL_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|U([0-9a-fA-F]{8}))")
# Only entities with their semicolon: html.unescape alone also decodes legacy
# forms without one, which turns "&notable" into "¬able".
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Nested damage ("&amp;nbsp;", an entity behind a zero-width space) needs more
# than one pass; every pass that changes something shortens the text, so this
# bound is only a safety net.
_MAX_REPAIR_PASSES = 8
FTFY_OPTIONS = {
    # Entities are decoded above, more conservatively than ftfy's "auto".
    "unescape_html": False,
    # Typographic quotes and full-width CJK punctuation are the source's text,
    # not damage: keep them as written.
    "uncurl_quotes": False,
    "fix_character_width": False,
    "normalization": "NFC",
}


def _decode_literal_escape(m: re.Match) -> str:
    code = int(m.group(1) or m.group(2) or m.group(3), 16)
    if code > 0x10FFFF:
        return m.group(0)
    ch = chr(code)
    if ch.isspace():
        return " "
    if unicodedata.category(ch) in ("Cf", "Cc", "Co", "Cn", "Cs") or _INVISIBLE.match(ch):
        return ""
    # The escape of a visible character may be meant (code, paths): leave it.
    return m.group(0)


def _decode_entity(m: re.Match) -> str:
    return html.unescape(m.group(0))


def _tidy_once(text: str) -> str:
    """The cheap repairs: line breaks, escapes, entities, invisible and control
    characters, NFC, whitespace. Each is skipped when the text cannot need it."""
    text = _LINE_BREAKS.sub("\n", text)
    if "\\" in text:
        text = _LITERAL_ESCAPE.sub(_decode_literal_escape, text)
    if "&" in text:
        text = _ENTITY.sub(_decode_entity, text)
    if not text.isascii():
        text = _INVISIBLE.sub("", text)
        text = _STRAY_JOINER.sub("", text)
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = _SYMBOL_RUN.sub(lambda m: m.group(0)[:MAX_SYMBOL_RUN], text)
    return "\n".join(paragraphs_of(text))


def _tidy(text: str) -> str:
    for _ in range(_MAX_REPAIR_PASSES):
        tidied = _tidy_once(text)
        if tidied == text:
            break
        text = tidied
    return text


def _fix_encoding(text: str) -> str:
    # Mojibake and ligatures are non-ASCII and terminal escapes start with ESC:
    # on other ASCII text ftfy (the costly step) can change nothing.
    if text.isascii() and "\x1b" not in text:
        return text
    import ftfy

    return ftfy.fix_text(text, **FTFY_OPTIONS)


def repair_text(text: str) -> str:
    """Repaired text, one paragraph per line, whitespace collapsed (a fixed point:
    repairing it again changes nothing)."""
    text = _tidy(text)
    for _ in range(_MAX_REPAIR_PASSES):
        # A repair can expose another ("&amp;#8203;", mojibake of an escape):
        # alternate until neither changes anything.
        fixed = _fix_encoding(text)
        if fixed == text:
            break
        text = _tidy(fixed)
    return text


def paragraphs_of(text: str) -> list[str]:
    """Non-empty lines, whitespace collapsed: each line of a scraped article is
    a paragraph (headlines, captions and body paragraphs alike)."""
    paragraphs = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if line:
            paragraphs.append(line)
    return paragraphs


def clean_text(text: str) -> str:
    """Repair and normalise text, keeping paragraph boundaries as blank lines."""
    return "\n\n".join(repair_text(text).split("\n")) if text else ""


def _one_line(text: str | None) -> str | None:
    if not text:
        return None
    return " ".join(repair_text(text).split()) or None


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_for_hash(text: str) -> str:
    """Fold case, Unicode variants, punctuation and whitespace: what exact-duplicate
    detection compares, so trivially re-typeset copies hash the same."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


# ---------------------------------------------------------------------------
# Publication time
# ---------------------------------------------------------------------------

# Offsets of the zone abbreviations that are unambiguous; an unknown one
# ("ET", "IST") leaves the time without an offset rather than a guessed one.
TIMEZONES = {
    "UTC": 0, "GMT": 0, "Z": 0, "BST": 3600, "IST": None, "WET": 0, "WEST": 3600, "CET": 3600,
    "CEST": 7200, "EET": 7200, "EEST": 10800, "MSK": 10800, "EST": -18000, "EDT": -14400,
    "CST": None, "CDT": -18000, "MST": -25200, "MDT": -21600, "PST": -28800, "PDT": -25200,
    "JST": 32400, "KST": 32400, "HKT": 28800, "SGT": 28800, "AEST": 36000, "AEDT": 39600,
}
# Languages dateparser tries for month names dateutil does not know; a short
# list because a string no language parses costs time per language tried.
DATEPARSER_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR_FIRST = re.compile(r"\s*\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")
_HAS_TIME = re.compile(r"\d{1,2}[:h]\d{2}|\d\s*[ap]\.?m\b", re.IGNORECASE)
_DOTTED_TIME = re.compile(r"(?<![.\d])(\d{1,2})\.(\d{2})(?![.\d])")
_DEFAULTS = (datetime.datetime(2001, 1, 1, 0, 0, 0), datetime.datetime(2002, 2, 2, 1, 1, 1))
_dateparsers: dict[str, object] = {}


def _iso(value: datetime.datetime, has_time: bool) -> str:
    if not has_time:
        return value.date().isoformat()
    return value.isoformat(timespec="seconds")


def _tzinfos(name: str | None, offset: int | None) -> int | None:
    if offset is not None and not name:
        return offset
    return TIMEZONES.get((name or "").upper())


def _parse_dateutil(text: str, order: str) -> str | None:
    from dateutil import parser

    text = _DOTTED_TIME.sub(r"\1:\2", text)
    dayfirst, yearfirst = order == "DMY", order == "YMD"
    if _YEAR_FIRST.match(text):
        dayfirst, yearfirst = False, True
    parsed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for default in _DEFAULTS:
            try:
                parsed.append(parser.parse(text, dayfirst=dayfirst, yearfirst=yearfirst, default=default,
                                           tzinfos=_tzinfos))
            except Exception:  # dateutil raises several types on odd input; unreadable is the answer
                return None
    a, b = parsed
    if (a.year, a.month, a.day) != (b.year, b.month, b.day):
        return None  # a part of the date was missing and filled from the default
    has_time = (a.hour, a.minute) == (b.hour, b.minute)
    return _iso(a, has_time)


def _parse_dateparser(text: str, order: str) -> str | None:
    parser = _dateparsers.get(order)
    if parser is None:
        from dateparser.date import DateDataParser

        parser = DateDataParser(languages=list(DATEPARSER_LANGUAGES), try_previous_locales=False, settings={
            "DATE_ORDER": order,
            "PREFER_DATES_FROM": "past",
            # A missing day or year would be filled from today: not reproducible.
            "REQUIRE_PARTS": ["day", "month", "year"],
            # No relative times ("3 hours ago"): they depend on when the run happens.
            "PARSERS": ["custom-formats", "absolute-time"],
        })
        _dateparsers[order] = parser
    try:
        value = parser.get_date_data(text).date_obj
    except Exception:  # as above: any failure means the string is not a date we can trust
        return None
    if value is None:
        return None
    return _iso(value, bool(_HAS_TIME.search(text)))


def parse_published(value: str | None, date_order: str = "DMY") -> str | None:
    """A publication time as ISO-8601, or None when it cannot be read reliably.

    ``date_order`` says how to read ambiguous numeric dates (03/04/2024). The
    result has a time only when the source gives one and an offset only when
    the source gives one.
    """
    if date_order not in DATE_ORDERS:
        raise ValueError(f"date_order must be one of {DATE_ORDERS}, got {date_order!r}")
    if not value:
        return None
    text = " ".join(str(value).split())
    if not text or len(text) > 100 or not any(ch.isdigit() for ch in text):
        return None
    if _ISO_DATE.match(text):
        try:
            iso = datetime.datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
            return _iso(iso, len(text) > 10)
        except ValueError:
            pass
    if "," in text[:5]:
        try:
            rfc = email.utils.parsedate_to_datetime(text)
            return _iso(rfc, True)
        except (TypeError, ValueError, IndexError):
            pass
    return _parse_dateutil(text, date_order) or _parse_dateparser(text, date_order)


# ---------------------------------------------------------------------------
# Boilerplate rules (data)
# ---------------------------------------------------------------------------

# Photo agencies and libraries whose name, alone or combined ("Getty/Reuters",
# "AFP via Getty Images", "Chip Somodevilla/Getty Images"), makes a credit line.
AGENCIES = (
    "Getty Images", "Getty", "Reuters", "AP", "AP Photo", "Associated Press", "AFP", "PA", "PA Media",
    "PA Wire", "PA Images", "PA Archive", "Press Association", "EPA", "EPA-EFE", "EFE", "Shutterstock",
    "Alamy", "Alamy Stock Photo", "Bloomberg", "Xinhua", "Anadolu", "Anadolu Agency", "ANSA", "TASS",
    "Sputnik", "UPI", "dpa", "DPA", "picture alliance", "Rex", "Rex Features", "REX/Shutterstock",
    "WireImage", "FilmMagic", "iStock", "iStockphoto", "NurPhoto", "SOPA Images", "LightRocket", "Sipa",
    "Sipa USA", "ZUMA", "ZUMA Press", "ZUMA Wire", "Zuma Press", "Corbis", "Kyodo", "Yonhap", "Imago",
    "Sportsfile", "Action Images", "Offside", "Handout", "Supplied",
)
# Labels that introduce a credit ("Photo: John Smith", "Image credit: AFP").
# Social networks and broadcasters are credits only behind one of these: alone
# on a line they are as likely share buttons.
CREDIT_LABELS = ("photo", "photograph", "photos", "image", "images", "picture", "pictures", "pic", "pics",
                 "credit", "credits", "photo credit", "image credit", "image source", "copyright")
# Words that make an all-caps header ending in a colon a promotion
# ("LATEST FROM THE FRONTLINE IN UKRAINE:", "DON'T MISS:").
PROMO_WORDS = ("LATEST", "MORE", "READ", "RELATED", "WATCH", "LISTEN", "SEE", "ALSO", "FOLLOW", "MISS",
               "TRENDING", "RECOMMENDED", "POPULAR", "TOP STORIES", "SIGN UP", "SUBSCRIBE", "LIVE",
               "VIDEO", "PICTURES", "PHOTOS", "GALLERY", "NEWS")
# Labels of a promoted link that shares its line with the linked headline
# ("READ MORE: Putin ...", "Related: ...").
PROMO_LINK_LABELS = ("read more", "read also", "also read", "more", "related", "see also", "watch", "listen",
                     "don't miss", "dont miss", "recommended", "trending", "most read", "latest")
# Whole lines that head or fill the page chrome around an article.
TRAILER_LINES = (
    "you may like", "you might like", "you may also like", "you might also like", "we recommend",
    "don't miss", "dont miss", "more", "see also", "also read", "read also", "must read", "editor's picks",
    "read more", "read next", "related", "related articles", "related stories", "related content",
    "related topics", "related coverage", "related news", "more on this story", "more stories",
    "more from", "more news", "most read", "most popular", "most viewed", "top stories", "recommended",
    "recommended for you", "recommended stories", "trending", "trending now", "sponsored",
    "sponsored content", "sponsored stories", "paid content", "promoted stories", "around the web",
    "comments", "view comments", "show comments", "hide comments", "leave a comment", "join the conversation",
    "back to top", "skip advert", "continue reading", "story continues below", "story continues",
    "article continues below", "article continues below this ad", "content continues below", "loading",
    "loading...", "next article", "previous article",
)
ADVERT_LINES = ("advertisement", "advertising", "advert", "ad", "sponsored", "scroll to continue",
                "scroll to continue with content", "continue reading below", "story continues below advertisement")
SHARE_LINES = ("share", "share this", "share this article", "share this story", "share article", "share story",
               "share page", "share on facebook", "share on twitter", "share on x", "share on whatsapp",
               "share via email", "tweet", "email", "print", "copy link", "link copied", "facebook", "twitter",
               "whatsapp", "linkedin", "reddit", "pinterest", "messenger", "flipboard", "save", "save article",
               "comment", "gift article", "listen to this article", "listen")
# Names that capitalise like people but follow "By" in ordinary sentences.
NOT_NAMES = frozenset({
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february",
    "march", "april", "may", "june", "july", "august", "september", "october", "november", "december",
    "christmas", "easter", "today", "tomorrow", "yesterday", "then", "now", "contrast", "comparison",
    "law", "far", "default", "design", "definition", "nature", "chance", "mistake", "night", "day",
    "noon", "midnight", "lunchtime", "the", "this", "that", "these", "those", "it", "its", "his", "her",
    "their", "our", "my", "your", "all", "some", "one", "god", "jove", "golly", "order", "virtue",
    "way", "means", "accident", "car", "train", "air", "road", "phone", "email", "post", "hand",
})
NAME_CONNECTORS = frozenset({"and", "&", "de", "del", "della", "der", "den", "van", "von", "da", "di", "du",
                             "la", "le", "bin", "ibn", "al", "el", "y", "dos", "das", "do", "ten", "ter", "zu"})
DATE_WORDS = frozenset({
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "january",
    "february", "march", "april", "june", "july", "august", "september", "october", "november",
    "december", "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun", "monday",
    "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "am", "pm", "a", "p", "m", "at",
    "on", "of", "the", "st", "nd", "rd", "th", "h", "t", "z",
}) | frozenset(name.lower() for name in TIMEZONES)
# Longest line taken as the caption of the credit after it: when the page
# repeats the line (as it repeats captions), and when it does not.
CAPTION_MAX_WORDS = 60
CAPTION_MAX_SINGLE_WORDS = 30
# Short lines recur legitimately (list items, "See it now: Amazon" under each
# product); only a repeat at least this long is a scraping duplicate.
REPEAT_MIN_WORDS = 8
_LIST_ITEM = re.compile(r"[-*•·▪‣◦]\s|\d{1,3}[.)]\s")
BYLINE_MAX_WORDS = 14
DATELINE_MAX_WORDS = 16


def _alternation(words, flags_upper: bool = False) -> str:
    variants = set(words)
    if flags_upper:
        variants |= {w.upper() for w in words}
    return "(?:" + "|".join(re.escape(w) for w in sorted(variants, key=len, reverse=True)) + ")"


_AGENCY = _alternation(AGENCIES, flags_upper=True) + r"(?:\s+(?:Photo|Images?|Pictures?))?"
_PERSON = r"(?:[A-Z][\w.'’-]*(?:\s+[A-Z][\w.'’-]*){0,3})"
_CREDIT_ITEM = rf"(?:{_PERSON}\s*(?:/|for|via)\s*)?{_AGENCY}"
_CREDIT_SEP = r"\s*(?:/|,|&|\||;|\band\b|\bvia\b|-)\s*"
_CREDIT_LEAD = (rf"(?:(?i:{_alternation(CREDIT_LABELS)})\s*(?:[:：]|by\b)\s*"
                r"|(?i:photo|picture|image)\s+by\s+|©\s*|\(c\)\s*)?")
# A credit at the end of a caption ("... in Kursk. Photo: Reuters"); only labels
# that cannot end an ordinary sentence ("Source: the ministry" can).
_INLINE_LABEL = r"(?i:{})\s*[:：]\s*".format(_alternation(
    ("photo", "photograph", "image", "picture", "pic", "credit", "photo credit", "image credit")))


@dataclass(frozen=True)
class LineRule:
    """One boilerplate rule: a whole-line pattern and what a matching line is.

    ``kind`` decides what happens to the line: ``credit`` (removed; the line
    before it is a caption), ``caption`` (moved to captions; group
    ``caption``), ``byline`` (removed; group ``name`` is the author),
    ``dateline`` / ``date`` (removed; group ``date`` is the publication
    time), ``time`` (removed; a time that completes the dateline before it),
    ``drop`` (removed). ``accept`` can veto a match on what the groups hold.
    """

    name: str
    kind: str
    pattern: re.Pattern
    accept: Callable[[re.Match], bool] | None = None


def _looks_like_name(text: str) -> bool:
    tokens = [t.strip(".,'’\"()") for t in re.split(r"[\s,]+", text) if t.strip(".,'’\"()")]
    if not 1 <= len(tokens) <= 10 or any(ch.isdigit() for ch in text):
        return False
    capitalised = 0
    for token in tokens:
        if token.lower() in NAME_CONNECTORS:
            continue
        if not token[0].isupper():
            return False
        if token.lower() in NOT_NAMES:
            return False
        capitalised += 1
    return capitalised >= 1


def _byline_ok(m: re.Match) -> bool:
    role = m.group("role")
    if len(m.group(0).split()) > BYLINE_MAX_WORDS or not _looks_like_name(m.group("name")):
        return False
    return role is None or (role[:1].isupper() and len(role.split()) <= 6 and not role.rstrip().endswith("."))


def _dateish(text: str) -> bool:
    """Made of digits, separators and date words only (no sentence around it);
    an all-caps word of two to five letters counts as a time zone."""
    words = re.findall(r"[^\W\d_]+", text)
    return any(ch.isdigit() for ch in text) and all(
        w.lower() in DATE_WORDS or (w.isupper() and 2 <= len(w) <= 5) for w in words)


def _date_line_ok(m: re.Match) -> bool:
    text = m.group("date")
    return len(text.split()) <= 10 and _dateish(text) and parse_published(text) is not None


_RELATIVE_TIME = re.compile(r"\d+\s*(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?|d|weeks?)\s+ago\b",
                            re.IGNORECASE)


def _dateline_ok(m: re.Match) -> bool:
    rest = m.group("date")
    if len(m.group(0).split()) > DATELINE_MAX_WORDS:
        return False
    if m.group("sep"):
        return True  # "Published: ..." is a dateline even when the date cannot be read
    return _dateish(rest) or _RELATIVE_TIME.match(rest) is not None or parse_published(rest) is not None


_PROMO_WORD = re.compile(rf"\b{_alternation(PROMO_WORDS)}\b")


def _is_promo_header(text: str) -> bool:
    return not any(ch.islower() for ch in text) and _PROMO_WORD.search(text) is not None


def _whole_line(words, *, trailing: str = r"[\s:.!…>»›→|]*") -> re.Pattern:
    return re.compile(rf"(?i:{_alternation(words)}){trailing}")


LINE_RULES: tuple[LineRule, ...] = (
    LineRule("photo_credit", "credit", re.compile(
        # Atomic items: "Getty/Getty/..." splits into items in many ways, and
        # trying them all on a line that fails at its end takes exponential time.
        rf"[(\[]?{_CREDIT_LEAD}(?>{_CREDIT_ITEM})(?>{_CREDIT_SEP}{_CREDIT_ITEM})*+[)\]]?\.?")),
    LineRule("photo_credit", "credit", re.compile(
        r"[(\[]?(?i:photo|photograph|image|picture|pic|credit)s?(?i:\s+credit)?\s*[:：]\s*"
        r"[^\s:：][^:：]{0,60}[)\]]?"),
        lambda m: len(m.group(0).split()) <= 9),
    LineRule("image_caption", "caption", re.compile(
        r"(?i:image|media|video|photo|picture)\s+caption\s*[:\-–]?\s*(?P<caption>.+)")),
    LineRule("image_credit", "drop", re.compile(
        r"(?i:image|photo|picture)\s+(?i:copyright|source|credit)\b.{0,80}")),
    LineRule("caption_credit", "caption", re.compile(
        rf"(?P<caption>.{{8,}}?[^\s(\[])\s*[(\[]\s*{_INLINE_LABEL}[^()\[\]]{{1,60}}[)\]]"),
        lambda m: len(m.group("caption").split()) <= CAPTION_MAX_WORDS),
    LineRule("caption_credit", "caption", re.compile(
        rf"(?P<caption>.{{8,}}?[.,;:!?])\s+{_INLINE_LABEL}[^.:]{{1,60}}?\.?"),
        lambda m: (len(m.group("caption").split()) <= CAPTION_MAX_WORDS
                   and len(m.group(0).split()) - len(m.group("caption").split()) <= 8)),
    LineRule("byline", "byline", re.compile(
        r"(?i:by|written by|words by|story by|text by|reporting by|reported by|report by|author)\s*[:\-–]?\s+"
        r"(?P<name>[^|•·–—:,;]{2,90}?)(?:\s*[|•·–—,;]\s*(?P<role>[^|•·–—]{2,60}))?"),
        _byline_ok),
    LineRule("dateline", "dateline", re.compile(
        r"(?P<label>(?i:first published|published|posted|last updated|updated|last modified|modified|"
        r"date|dated))(?:\s+(?i:on|at))?\s*(?P<sep>[:\-–—|])?\s*(?P<date>\S.{2,80})"),
        _dateline_ok),
    LineRule("date_line", "date", re.compile(r"[-–—|•·]?\s*(?P<date>[\w,./:\-– ]{6,60}?)\s*[|•·]?"),
             _date_line_ok),
    LineRule("time_line", "time", re.compile(
        r"[-–—|•·,]?\s*(?P<time>\d{1,2}[:.]\d{2}(?::\d{2})?\s*(?:[aApP]\.?[mM]\.?)?\s*(?:[A-Z]{1,5})?)")),
    LineRule("promo_header", "drop", re.compile(r"[^a-z:]{3,100}:"), lambda m: _is_promo_header(m.group(0))),
    LineRule("promo_link", "drop", re.compile(
        rf"[\[(]?(?i:{_alternation(PROMO_LINK_LABELS)})\s*[:|›»>]\s*\S.{{0,200}}")),
    # A teaser headline tagged like "... [VIDEO]" or "... [INSIGHT]".
    LineRule("promo_link", "drop", re.compile(r".{5,200}?\s*\[[A-Z][A-Z ]{1,20}\]\s*[|•·]?"),
             lambda m: len(m.group(0).split()) <= 30),
    LineRule("promo_link", "drop", re.compile(r"(?P<head>[^a-z:]{3,60}):\s+\S.{0,200}"),
             lambda m: _is_promo_header(m.group("head"))),
    LineRule("trailer", "drop", _whole_line(TRAILER_LINES)),
    LineRule("advert", "drop", _whole_line(ADVERT_LINES)),
    LineRule("share", "drop", _whole_line(SHARE_LINES)),
    LineRule("follow", "drop", re.compile(
        r"(?i:follow\s+(?:us|@\w+|[\w .'’-]{1,40}?\s+on)\s+(?:on\s+)?"
        r"(?:twitter|x|facebook|instagram|linkedin|tiktok|youtube|threads|bluesky|telegram|whatsapp)"
        r"|(?:like|find)\s+us\s+on\s+facebook)\b.{0,200}"),
        lambda m: len(m.group(0).split()) <= 40),
    # Contributor notes: names that are not the article's subject, and would
    # otherwise be counted as PERSON mentions.
    LineRule("reporting_credit", "drop", re.compile(
        r"[(\[]?(?i:(?:additional\s+|with\s+)?(?:reporting|writing|editing|research|translation)\s+by)\b.{0,300}"
        r"|.{0,120}\b(?i:contributed\s+(?:reporting|to\s+this\s+(?:report|article|story)))\b.{0,80}"),
        lambda m: len(m.group(0).split()) <= 45),
    LineRule("source_line", "drop", re.compile(r"(?i:sources?)\s*:\s*\S.{0,60}"),
             lambda m: len(m.group(0).split()) <= 6 and not m.group(0).rstrip().endswith(".")),
    LineRule("trailer", "drop", re.compile(
        r"(?i:most\s+(?:read|popular|viewed|shared)|more\s+(?:from|on|in|about)|latest\s+from|top\s+stories\s+(?:in|from))"
        r"\b[^.!?]{0,50}"),
        lambda m: len(m.group(0).split()) <= 6),
    LineRule("newsletter", "drop", re.compile(
        r"(?i:(?:sign\s+up|subscribe|register|get|receive|join)\b.{0,80}\bnewsletters?\b.{0,120}"
        r"|newsletter\s+sign[\s-]?up.{0,60})"),
        lambda m: len(m.group(0).split()) <= 30),
)

# Rules decided from context rather than by one line's pattern.
CONTEXT_RULES = (
    "caption",  # the line before a credit, and every repeat of it
    "byline_name",  # a line that is only the author's name ("George Bunn" next to "By George Bunn")
    "dateline_time",  # a time line completing the dateline before it ("- 20:19")
    "title_repeat",  # the headline again as the first paragraphs
    "repeated_paragraph",  # a paragraph already kept earlier in the article
)
RULE_NAMES: tuple[str, ...] = tuple(dict.fromkeys([r.name for r in LINE_RULES] + list(CONTEXT_RULES)))


# ---------------------------------------------------------------------------
# Applying the rules
# ---------------------------------------------------------------------------

@dataclass
class CleanBody:
    """What ``clean_body`` makes of an article body."""

    paragraphs: list[str]
    captions: list[str] = field(default_factory=list)
    credits: list[str] = field(default_factory=list)
    author: str | None = None
    published: str | None = None
    removed: list[tuple[str, str]] = field(default_factory=list)  # (rule name, line)

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    def fired(self) -> Counter:
        return Counter(rule for rule, _ in self.removed)


def _key(line: str) -> str:
    return normalise_for_hash(line)


def _could_be_caption(line: str, repeated: bool) -> bool:
    # A parenthesised line before "© Reuters" is the wire's "(Reporting by ...)"
    # trailer, not a caption.
    if line[:1] in "([" and line[-1:] in ")]":
        return False
    # A long line signed by a credit is more likely the paragraph next to an
    # uncaptioned photo, unless the page repeats it the way it repeats captions.
    return len(line.split()) <= (CAPTION_MAX_WORDS if repeated else CAPTION_MAX_SINGLE_WORDS)


def _author_names(author: str) -> set[str]:
    names = {_key(author)}
    names.update(_key(part) for part in re.split(r"\s*(?:,|;|\band\b|&)\s*", author))
    return {n for n in names if n}


def _match_rule(line: str) -> tuple[LineRule, re.Match] | None:
    for rule in LINE_RULES:
        m = rule.pattern.fullmatch(line)
        if m and (rule.accept is None or rule.accept(m)):
            return rule, m
    return None


def clean_body(text: str, title: str | None = None, author: str | None = None,
               date_order: str = "DMY") -> CleanBody:
    """Apply the text repair and the boilerplate rules to an article body.

    ``title`` and ``author`` are what the source's metadata says (a paragraph
    repeating either is removed); the author found in a byline is returned
    only when ``author`` is not given.
    """
    repaired = repair_text(text) if text else ""
    lines = repaired.split("\n") if repaired else []
    n = len(lines)
    kinds: list[str | None] = [None] * n
    rules: list[str | None] = [None] * n
    matches: list[re.Match | None] = [None] * n
    for i, line in enumerate(lines):
        hit = _match_rule(line)
        if hit:
            rule, m = hit
            kinds[i], rules[i], matches[i] = rule.kind, rule.name, m
    keys = [_key(line) for line in lines]

    def remove(i: int, kind: str, rule: str) -> None:
        kinds[i], rules[i] = kind, rule

    # Bylines: the first one names the author unless the metadata did.
    byline_author = next((matches[i].group("name").strip() for i in range(n) if kinds[i] == "byline"), None)
    found_author = author or byline_author
    if found_author:
        names = _author_names(found_author)
        for i in range(n):
            if kinds[i] is None and keys[i] in names:
                remove(i, "byline", "byline_name")

    # Datelines, with a time on the next line completing them.
    published = updated = None
    for i in range(n):
        if kinds[i] not in ("dateline", "date"):
            continue
        date_text = matches[i].group("date")
        if i + 1 < n and kinds[i + 1] == "time":
            date_text = f"{date_text} {matches[i + 1].group('time')}"
            remove(i + 1, "drop", "dateline_time")
        value = parse_published(date_text.split("|")[0].strip(), date_order)
        label = matches[i].group("label").lower() if kinds[i] == "dateline" else ""
        if "updated" in label or "modified" in label:
            updated = updated or value
        else:
            published = published or value

    # A time line is the dateline's only when it follows one: elsewhere it is a
    # heading of the text ("4:14 p.m." in a live blog).
    for i in range(n):
        if kinds[i] == "time":
            kinds[i] = rules[i] = None

    # Captions: the line signed by a credit, then every repeat of it.
    caption_keys: dict[str, int] = {}
    key_counts = Counter(keys)
    last_other = -1
    for i in range(n):
        if kinds[i] == "caption":
            caption_keys.setdefault(_key(matches[i].group("caption")), i)
        elif kinds[i] == "credit":
            j = last_other  # the line before this run of credits
            if j >= 0 and kinds[j] is None and _could_be_caption(lines[j], key_counts[keys[j]] > 1):
                caption_keys.setdefault(keys[j], j)
        if kinds[i] != "credit":
            last_other = i
    caption_keys.pop("", None)
    captions: dict[str, str] = {}
    for i in range(n):
        key = None
        if kinds[i] == "caption":
            key, caption = _key(matches[i].group("caption")), matches[i].group("caption").strip()
        elif kinds[i] is None and keys[i] in caption_keys:
            key, caption = keys[i], lines[i]
            remove(i, "caption", "caption")
        if key and key not in captions:
            captions[key] = caption
    caption_list = [captions[k] for k in sorted(captions, key=lambda k: caption_keys.get(k, n))]

    # The headline repeated as the first paragraph, and any paragraph repeated later.
    title_key = _key(title) if title else ""
    seen: set[str] = set()
    leading = True
    for i in range(n):
        if kinds[i] is not None:
            continue
        key = keys[i]
        if leading and title_key and key == title_key:
            remove(i, "drop", "title_repeat")
            continue
        leading = False
        if key and key in seen and len(lines[i].split()) >= REPEAT_MIN_WORDS and not _LIST_ITEM.match(lines[i]):
            remove(i, "drop", "repeated_paragraph")
        seen.add(key)

    return CleanBody(
        paragraphs=[lines[i] for i in range(n) if kinds[i] is None],
        captions=caption_list,
        credits=list(dict.fromkeys(lines[i] for i in range(n) if kinds[i] == "credit")),
        author=None if author else _clean_author(byline_author),
        published=published or updated,
        removed=[(rules[i], lines[i]) for i in range(n) if kinds[i] is not None],
    )


_BY_PREFIX = re.compile(r"^(?:by|written by|words by|story by|author)\s*[:\-–]?\s+", re.IGNORECASE)


def _clean_author(value: str | None) -> str | None:
    value = _one_line(value)
    if not value:
        return None
    return _BY_PREFIX.sub("", value).strip(" ,;|") or None


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------

# Chosen on the article-extraction benchmark (scripts/evaluate.py clean):
# comments are never article text, and favouring precision cut the page chrome
# trafilatura otherwise keeps at little cost in recall.
TRAFILATURA_OPTIONS = {
    "include_comments": False,
    "favor_precision": True,
    "include_tables": True,
    "include_images": False,
    "include_links": False,
    "deduplicate": False,
}


# trafilatura spends 10-180 us per tag (measured on built pages: empty
# unclosed "<p><b>" pairs, spans, table cells), so a 1 MB page of 174,000
# tags took 32 s. The 92 pages of the article-extraction benchmark have 784
# tags at the median and 1,737 at most; a page with more than this is refused
# before trafilatura sees it, which bounds a page at a few seconds.
MAX_HTML_TAGS = 20_000
_OPEN_TAG = re.compile(r"<[A-Za-z]")


def count_tags(page: str, stop: int = MAX_HTML_TAGS + 1) -> int:
    """Opening tags in ``page`` (an element each), counted up to ``stop``."""
    found = 0
    for _ in _OPEN_TAG.finditer(page):
        found += 1
        if found >= stop:
            break
    return found


def extract_html(page: str) -> dict:
    """Main text and metadata of an HTML page: {'text', 'title', 'author', 'date',
    'url', 'language'}; empty when nothing was found.

    trafilatura gets the page as a string and no URL, so it never fetches
    anything.
    """
    import trafilatura

    if count_tags(page) > MAX_HTML_TAGS:
        raise HtmlExtractionError(f"the page has more than {MAX_HTML_TAGS:,} tags (a news page has a few "
                                  "thousand); not extracted, so that no page can take minutes")
    try:
        doc = trafilatura.bare_extraction(page, with_metadata=True, **TRAFILATURA_OPTIONS)
    except Exception as e:  # lxml and trafilatura raise many types on hostile markup
        raise HtmlExtractionError(f"trafilatura failed: {type(e).__name__}: {e}") from e
    if doc is None:
        return {}
    values = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
    return {k: values.get(k) for k in ("text", "title", "author", "date", "url", "language")}


class HtmlExtractionError(Exception):
    pass


# Feeds often put the body's HTML in a JSON text field: two or more block or
# inline tags (closing tags included) are markup, not prose about markup.
_MARKUP_TAG = re.compile(r"</?(?:p|br|div|span|a|em|strong|b|i|u|h[1-6]|li|ul|ol|figure|figcaption|img|"
                         r"blockquote|section|article|table|tr|td)\b[^<>]{0,500}>", re.IGNORECASE)
_BLOCK_BREAK = re.compile(r"<br\s*/?>|</(?:p|div|h[1-6]|li|figure|figcaption|blockquote|section|article|tr)\s*>",
                          re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^<>]{0,2000}>")


def looks_like_markup(text: str) -> bool:
    found = 0
    for _ in _MARKUP_TAG.finditer(text):
        found += 1
        if found >= 2:
            return True
    return False


def markup_to_text(text: str) -> str:
    """The text of an HTML fragment, one line per block element."""
    import lxml.html
    from lxml.etree import ParserError

    text = _BLOCK_BREAK.sub("\n", text)
    try:
        root = lxml.html.fromstring(f"<div>{text}</div>")
    except (ParserError, ValueError):
        return _ANY_TAG.sub(" ", text)
    for element in root.xpath("//script|//style|//noscript"):
        element.drop_tree()
    return root.text_content()


# ---------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------

# Letters (and their combining marks) of the scripts written without spaces
# between words: Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar. Script
# extensions, so the Japanese long-vowel mark and the iteration mark count.
UNSPACED_LETTER = regex.compile(
    r"[[\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Thai}\p{scx=Lao}\p{scx=Khmer}\p{scx=Myanmar}]"
    r"&&[\p{L}\p{M}]]", regex.V1)
_WORDLIKE = regex.compile(r"[\p{L}\p{N}]")
# Every code point UNSPACED_LETTER matches lies in one of these ranges (a test
# checks it over the whole of Unicode). The standard re module scans a text for
# them in a few microseconds, where the script-extension test takes 0.1 ms per
# 2 kB, and most text holds none of them at all.
_UNSPACED_RANGES = re.compile(
    "[\u02bc-\u0331\u0e01-\u0edf\u1000-\u109d\u1780-\u17dd\u3005-\u31ff\u3400-\u9fff\ua9e0-\uaa7f"
    "\uf900-\ufad9\uff66-\uff9f\U00016fe3-\U00016ff3\U0001aff0-\U0001b168\U00020000-\U0002ee5d"
    "\U0002f800-\U0002fa1d\U00030000-\U00033479]")


def has_unspaced_letter(text: str) -> bool:
    """Whether ``text`` holds a letter of a script written without spaces (``UNSPACED_LETTER``)."""
    return _UNSPACED_RANGES.search(text) is not None and UNSPACED_LETTER.search(text) is not None


def _segmented_words(text: str) -> int:
    """Words of unspaced-script text by ICU's word break rules (dictionaries
    for Chinese, Japanese, Thai, Lao, Khmer and Burmese), counting segments
    with a letter or digit: punctuation and spaces are segments too."""
    from icu4py.breakers import WordBreaker

    return sum(1 for segment in WordBreaker(text, "und") if _WORDLIKE.search(segment))


def count_words(text: str) -> int:
    """Words of a clean text, the way a reader counts them.

    Whitespace-separated tokens, except that tokens holding letters of a
    script written without spaces (``UNSPACED_LETTER``) are split into words
    by ICU's word segmenter (icu4py, which bundles ICU and its dictionaries):
    a 7-sentence Chinese, Japanese or Thai article has 150-250 words, not one
    per sentence. Text in other scripts counts exactly as ``str.split``."""
    tokens = text.split()
    if not has_unspaced_letter(text):
        return len(tokens)
    unspaced = [token for token in tokens if UNSPACED_LETTER.search(token)]
    if not unspaced:
        return len(tokens)
    # A line break is a word boundary for ICU, so one call covers every token.
    return len(tokens) - len(unspaced) + _segmented_words("\n".join(unspaced))


# ---------------------------------------------------------------------------
# Articles
# ---------------------------------------------------------------------------

def clean_article_explained(raw: dict, min_words: int = 20, date_order: str = "DMY") -> tuple[dict, Counter]:
    """(clean article or rejected record, how often each rule fired)."""
    article = dict(raw)
    fired: Counter = Counter()
    if raw.get("format") == "html":
        try:
            doc = extract_html(raw.get("text") or "")
        except HtmlExtractionError as e:
            return rejected(raw["source"], STAGE, "html_unparseable", str(e),
                            (raw.get("text") or "")[:2000]), fired
        if not doc.get("text"):
            return rejected(raw["source"], STAGE, "empty_after_clean", "no main content found in the HTML page",
                            (raw.get("text") or "")[:2000]), fired
        fired["html_extracted"] += 1
        article["text"] = doc.get("text") or ""
        article["title"] = raw.get("title") or doc.get("title")
        article["author"] = raw.get("author") or doc.get("author")
        article["published"] = raw.get("published") or doc.get("date")
        article["url"] = raw.get("url") or doc.get("url")
        article["language_hint"] = raw.get("language_hint") or doc.get("language")
    elif article.get("text") and looks_like_markup(article["text"]):
        article["text"] = markup_to_text(article["text"])
        fired["markup_stripped"] += 1

    title = _one_line(article.get("title"))
    author = _clean_author(article.get("author"))
    body = clean_body(article.get("text") or "", title=title, author=author, date_order=date_order)
    fired.update(body.fired())

    published = None
    if article.get("published"):
        published = parse_published(_one_line(article["published"]), date_order)
        if published is None:
            fired["published_unparsed"] += 1
    article["published"] = published or body.published
    article["title"] = title
    article["author"] = author or body.author
    article["url"] = _one_line(article.get("url"))
    article["text"] = body.text
    article["captions"] = body.captions
    article.pop("format", None)

    words = count_words(article["text"])
    if words == 0:
        return rejected(raw["source"], STAGE, "empty_after_clean",
                        "no text left after cleaning", (raw.get("text") or "")[:2000]), fired
    if words < min_words:
        return rejected(raw["source"], STAGE, "too_short",
                        f"{words} words after cleaning, fewer than --min-words={min_words}",
                        article["text"]), fired
    article["word_count"] = words
    article["content_hash"] = sha256_hex(normalise_for_hash(article["text"]))
    return article, fired


def clean_article(raw: dict, min_words: int = 20, date_order: str = "DMY") -> dict:
    """One raw article -> clean article, or a rejected record (has ``reason``)."""
    return clean_article_explained(raw, min_words, date_order)[0]


def _check_arguments(min_words: int, date_order: str) -> None:
    if min_words < 0:
        raise ValueError("min_words must be zero or more")
    if date_order not in DATE_ORDERS:
        raise ValueError(f"date_order must be one of {DATE_ORDERS}, got {date_order!r}")


class CleanArticleFn(beam.DoFn):
    """Clean one raw article; count every rule that fired as ``clean:rule_<name>``."""

    def __init__(self, min_words: int, date_order: str):
        _check_arguments(min_words, date_order)
        self._min_words = min_words
        self._date_order = date_order

    def setup(self):
        self._kept = Metrics.counter(STAGE, "articles")
        self._counters = {}

    def _counter(self, name: str):
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter(
                STAGE, name if name in ("html_extracted", "markup_stripped", "published_unparsed") else f"rule_{name}")
        return counter

    def process(self, raw: dict):
        result, fired = clean_article_explained(raw, self._min_words, self._date_order)
        for name, count in fired.items():
            self._counter(name).inc(count)
        if "reason" in result:
            yield tag_rejected(STAGE, result)
        else:
            self._kept.inc()
            yield result


class CleanArticles(beam.PTransform):
    """Raw articles -> {'articles': clean articles, 'rejected': rejected records}."""

    def __init__(self, min_words: int = 20, date_order: str = "DMY"):
        super().__init__()
        _check_arguments(min_words, date_order)
        self._min_words = min_words
        self._date_order = date_order

    def expand(self, raw_articles):
        results = raw_articles | "Clean" >> beam.ParDo(
            CleanArticleFn(self._min_words, self._date_order)).with_outputs(REJECTED_TAG, main="articles")
        return {"articles": results.articles, "rejected": results[REJECTED_TAG]}
