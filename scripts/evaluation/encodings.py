"""Legacy encodings and damaged UTF-8: is the text read back as it was written?

Documents: each run of ``--sentences`` consecutive lines of
``lingua-langid/sentences/<lang>.txt`` (disjoint runs, at most ``--docs``
per language) is one document. Each is written

* in every legacy code page that news in that language has shipped in and
  that can represent the document (``LEGACY``: cp1252/ISO-8859-15 for
  western European languages, cp1250/ISO-8859-2 for central European ones,
  cp1251/KOI8-R/KOI8-U for Cyrillic, cp1253, cp1254, cp1255, cp1256, cp1257,
  cp874, Shift-JIS/EUC-JP, GB18030/Big5, EUC-KR ...);
* as UTF-8 with one byte of a multi-byte character replaced by a byte that
  cannot start or continue one (a damaged download), and as UTF-8 with one
  sentence written in cp1252 (a feed that pasted legacy text);
* in UTF-16 (little- and big-endian) without a byte-order mark, as Windows
  tools write it, for every language of lingua-langid (``--utf16-docs`` per
  language, ASCII-only documents included): Chinese, Japanese and Thai have
  too little ASCII for the NULs to show the encoding.

A document is *recovered* when ``read.decode_bytes`` gives its text back
exactly (for damaged UTF-8: everything but the damaged character). The
baseline is charset_normalizer's best guess alone, what ``decode_bytes``
used before. Printed: recovery per encoding family, the worst documents, and
the time per MB.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lingua-langid"

_DAMAGED = "utf-8, one bad byte"
_WEST = ("cp1252", "iso8859_15")
_CENTRAL = ("cp1250", "iso8859_2")
_CYRILLIC = ("cp1251", "koi8_r", "iso8859_5")
# Languages of lingua-langid -> code pages their news shipped in before UTF-8.
LEGACY = {
    **{lang: _WEST for lang in ("af", "ca", "cy", "da", "de", "en", "es", "eu", "fi", "fr", "ga", "id", "is",
                                "it", "la", "ms", "nb", "nl", "nn", "pt", "sq", "sv", "sw", "tl")},
    **{lang: _CENTRAL for lang in ("bs", "cs", "hr", "hu", "pl", "ro", "sk", "sl")},
    **{lang: _CYRILLIC for lang in ("bg", "mk", "ru", "sr")},
    "uk": ("cp1251", "koi8_u"), "be": ("cp1251",), "kk": ("cp1251",),
    "el": ("cp1253", "iso8859_7"), "tr": ("cp1254", "iso8859_9"), "az": ("cp1254",),
    "he": ("cp1255", "iso8859_8"), "ar": ("cp1256", "iso8859_6"), "fa": ("cp1256",), "ur": ("cp1256",),
    "lt": ("cp1257", "iso8859_13"), "lv": ("cp1257", "iso8859_13"), "et": ("cp1257", "iso8859_15"),
    "th": ("cp874",), "vi": ("cp1258",), "ja": ("shift_jis", "euc_jp"), "zh": ("gb18030", "big5"),
    "ko": ("euc_kr",),
}


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="lingua-langid folder (default: ../shared/data/lingua-langid from the repo root)")
    parser.add_argument("--sentences", type=int, default=8, help="sentences per document (default: 8)")
    parser.add_argument("--docs", type=int, default=20, help="documents per language (default: 20)")
    parser.add_argument("--seed", type=int, default=15, help="random seed of the damage (default: 15)")
    parser.add_argument("--worst", type=int, default=8, help="unrecovered documents to print (default: 8)")
    parser.add_argument("--utf16-docs", type=int, default=4,
                        help="documents per language written in UTF-16 without a BOM (default: 4)")


def documents(data: Path, lang: str, sentences: int, docs: int) -> list[str]:
    lines = [line.strip() for line in (data / "sentences" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    runs = ["\n".join(lines[i:i + sentences]) for i in range(0, len(lines) - sentences + 1, sentences)]
    return runs[:docs]


def damage_utf8(text: str, rng: random.Random) -> tuple[bytes, str] | None:
    """UTF-8 of ``text`` with one multi-byte character's lead byte made invalid; (bytes, text without it)."""
    positions = [i for i, ch in enumerate(text) if ord(ch) > 0x7F]
    if not positions:
        return None
    i = rng.choice(positions)
    damaged = text[:i].encode() + b"\xff" + text[i].encode()[1:] + text[i + 1:].encode()
    return damaged, text[:i] + text[i + 1:]


def paste_cp1252(text: str, rng: random.Random) -> bytes | None:
    """UTF-8 of ``text`` with one line that cp1252 can hold written in cp1252 instead, or None."""
    lines = text.split("\n")
    candidates = [k for k, line in enumerate(lines) if any(ord(c) > 0x7F for c in line) and _fits(line, "cp1252")]
    if len(lines) < 2 or not candidates:
        return None
    k = rng.choice(candidates)
    return b"\n".join(line.encode("cp1252") if j == k else line.encode() for j, line in enumerate(lines))


def _fits(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def cases(data: Path, sentences: int, docs: int, seed: int, utf16_docs: int = 0):
    """(family, language, bytes, expected text, is_damaged) for every document and way of writing it."""
    rng = random.Random(seed)
    for path in sorted((data / "sentences").glob("*.txt")) if utf16_docs else ():
        for text in documents(data, path.stem, sentences, utf16_docs):
            for encoding in ("utf-16-le", "utf-16-be"):
                yield f"{encoding}, no BOM", path.stem, text.encode(encoding), text, False
    for lang, encodings in sorted(LEGACY.items()):
        if not (data / "sentences" / f"{lang}.txt").exists():
            continue
        for text in documents(data, lang, sentences, docs):
            if not any(ord(c) > 0x7F for c in text):
                continue  # ASCII reads the same in every encoding: nothing to tell
            for encoding in encodings:
                if _fits(text, encoding):
                    yield encoding, lang, text.encode(encoding), text, False
            damaged = damage_utf8(text, rng)
            if damaged:
                yield _DAMAGED, lang, damaged[0], damaged[1], True
            pasted = paste_cp1252(text, rng)
            if pasted:
                yield "utf-8 + a cp1252 line", lang, pasted, text, False


def baseline_decode(data: bytes) -> str:
    """What decode_bytes did before: strict UTF-8, else charset_normalizer's best, else cp1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None and best.encoding:
        try:
            return data.decode(best.encoding)
        except (UnicodeDecodeError, LookupError):
            pass
    return data.decode("cp1252", errors="replace")


def recovered(decoded: str, expected: str, damaged: bool) -> bool:
    if not damaged:
        return decoded == expected
    # The damaged character's bytes may read as replacement characters or as cp1252 letters: at most 4 of them.
    i = next((k for k, (a, b) in enumerate(zip(decoded, expected)) if a != b), min(len(decoded), len(expected)))
    extra = len(decoded) - len(expected)
    return 0 <= extra <= 4 and decoded[:i] == expected[:i] and decoded[i + extra:] == expected[i:]


def run(args) -> dict:
    sys.path.insert(0, str(REPO))
    from pipelines.read import decode_bytes

    data = Path(args.data)
    if not (data / "sentences").is_dir():
        raise SystemExit(f"no sentences/ under {data}")
    families = defaultdict(lambda: {"n": 0, "ok": 0, "baseline_ok": 0})
    failures, size, seconds, base_seconds = [], 0, 0.0, 0.0
    for family, lang, payload, expected, damaged in cases(data, args.sentences, args.docs, args.seed, args.utf16_docs):
        started = time.perf_counter()
        text, used = decode_bytes(payload)
        seconds += time.perf_counter() - started
        started = time.perf_counter()
        base = baseline_decode(payload)
        base_seconds += time.perf_counter() - started
        size += len(payload)
        f = families[family]
        f["n"] += 1
        ok = recovered(text, expected, damaged)
        f["ok"] += ok
        f["baseline_ok"] += recovered(base, expected, damaged)
        if not ok:
            failures.append((family, lang, used, text[:70].replace("\n", " ")))
    print(f"{'written as':24} {'docs':>5} {'decode_bytes':>13} {'baseline':>9}")
    for family in sorted(families):
        f = families[family]
        print(f"{family:24} {f['n']:5d} {f['ok'] / f['n']:13.3f} {f['baseline_ok'] / f['n']:9.3f}")
    n = sum(f["n"] for f in families.values())
    ok = sum(f["ok"] for f in families.values())
    base_ok = sum(f["baseline_ok"] for f in families.values())
    macro = sum(f["ok"] / f["n"] for f in families.values()) / len(families)
    base_macro = sum(f["baseline_ok"] / f["n"] for f in families.values()) / len(families)
    print(f"{'all':24} {n:5d} {ok / n:13.3f} {base_ok / n:9.3f}"
          f"   (macro over encodings {macro:.3f} vs {base_macro:.3f})")
    mb = size / 1e6
    print(f"time: decode_bytes {seconds / mb:.3f} s/MB, baseline {base_seconds / mb:.3f} s/MB over {mb:.1f} MB")
    for family, lang, used, head in failures[:args.worst]:
        print(f"  not recovered: {lang} written as {family}, read as {used}: {head!r}")
    return {
        "documents": n,
        "recovered": round(ok / n, 4),
        "recovered_macro": round(macro, 4),
        "baseline_recovered": round(base_ok / n, 4),
        "baseline_recovered_macro": round(base_macro, 4),
        "recovered_per_encoding": {k: round(f["ok"] / f["n"], 4) for k, f in sorted(families.items())},
        "cp1252_recovered": round(families["cp1252"]["ok"] / max(1, families["cp1252"]["n"]), 4),
        "damaged_utf8_recovered": round(families[_DAMAGED]["ok"] / max(1, families[_DAMAGED]["n"]), 4),
        "utf16_no_bom_recovered": round(
            sum(f["ok"] for k, f in families.items() if k.startswith("utf-16"))
            / max(1, sum(f["n"] for k, f in families.items() if k.startswith("utf-16"))), 4),
        "seconds_per_mb": round(seconds / mb, 4),
    }
