"""Every evaluation (clean, dedupe, dedupe_scripts, language, ner on CoNLL-2003 and CoNLL++), one table of targets.

Each evaluation module's own ``add_arguments`` builds its arguments (so its
defaults apply) with ``--data`` pointed at its folder under ``--data-root``;
its ``run`` prints its figures as usual. The report (``eval-report.md``, a
generated file) has one table: every figure, its target where there is one, and
pass/FAIL. An evaluation that is missing or fails gets a row saying so and does
not stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DEFAULT_REPORT = REPO / "eval-report.md"


@dataclass(frozen=True)
class Evaluation:
    name: str  # row id in the report and key in the returned dict
    module: str  # scripts/evaluation/<module>.py
    data: str  # path under --data-root


@dataclass(frozen=True)
class Target:
    evaluation: str
    figure: str  # key in the evaluation's result
    op: str  # ">=" or "=="
    target: float | bool | str  # a number, or the key of another figure of the same result
    label: str


EVALUATIONS = (
    Evaluation("clean", "clean", "article-extraction-benchmark"),
    Evaluation("dedupe", "dedupe", "bbc-news"),
    Evaluation("language", "language", "lingua-langid"),
    Evaluation("ner_conll2003", "ner", "conll2003/valid.txt"),
    Evaluation("ner_conllpp", "ner", "conllpp-2020/conllpp_dev.txt"),
    Evaluation("dedupe_scripts", "dedupe_scripts", "lingua-langid"),
    Evaluation("encodings", "encodings", "lingua-langid"),
)

# The targets of the stage issues, as data.
TARGETS = (
    Target("clean", "f1", ">=", "baseline_f1", "token F1 not below plain trafilatura"),
    Target("dedupe", "exact_recall", "==", 1.0, "exact-duplicate recall"),
    Target("dedupe", "recall", ">=", 0.98, "pair recall"),
    Target("dedupe", "precision", ">=", 0.99, "pair precision"),
    Target("language", "paragraph_accuracy", ">=", 0.997, "paragraph accuracy, macro"),
    Target("language", "sentence_accuracy", ">=", 0.97, "sentence accuracy, macro"),
    Target("language", "unsupported_safe_rate", ">=", 0.90, "unsupported languages und or right"),
    Target("language", "deterministic", "==", True, "same answers in another order"),
    Target("ner_conll2003", "f1", ">=", "raw_f1", "entity F1 not below the raw model"),
    Target("ner_conllpp", "f1", ">=", "raw_f1", "entity F1 not below the raw model"),
    # Issue 16: the md English model, near copies in scripts written without spaces.
    Target("ner_conll2003", "f1", ">=", 0.715, "entity F1, default English model"),
    Target("ner_conllpp", "f1", ">=", 0.775, "entity F1, default English model"),
    *(t for lang in ("zh", "ja", "th") for t in (
        Target("dedupe_scripts", f"{lang}_recall", ">=", 0.95, f"{lang} near copies (2% edited) found"),
        Target("dedupe_scripts", f"{lang}_distinct_folded", "==", 0, f"{lang} distinct articles folded"))),
    Target("dedupe_scripts", "en_distinct_folded", "==", 0, "en distinct articles folded"),
    # Issue 15: legacy encodings and damaged UTF-8 read back as written.
    Target("encodings", "recovered", ">=", 0.95, "documents read back exactly"),
    Target("encodings", "recovered", ">=", "baseline_recovered", "not below charset_normalizer alone"),
    Target("encodings", "cp1252_recovered", ">=", 0.98, "cp1252 documents read back exactly"),
    Target("encodings", "damaged_utf8_recovered", ">=", 0.98, "UTF-8 with one bad byte stays UTF-8"),
    Target("encodings", "utf16_no_bom_recovered", ">=", 0.98, "UTF-16 without a byte-order mark, every script"),
)

PASS, FAIL, NO_TARGET, MISSING = "pass", "FAIL", "", "missing"


def add_arguments(parser) -> None:
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding the datasets (default: ../shared/data from the repo root)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT,
                        help="Markdown report to write (default: eval-report.md at the repo root)")
    parser.add_argument("--only", default=None,
                        help="comma-separated evaluations to run (default: all: "
                             + ",".join(e.name for e in EVALUATIONS) + ")")


def evaluation_args(module, data: Path) -> argparse.Namespace:
    """The module's arguments with their defaults, ``--data`` set."""
    parser = argparse.ArgumentParser(prog=f"evaluate.py {module.__name__.rsplit('.', 1)[-1]}")
    module.add_arguments(parser)
    return parser.parse_args(["--data", str(data)])


def _import(name: str):
    here = str(Path(__file__).resolve().parent.parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module(f"evaluation.{name}")


def run_one(evaluation: Evaluation, data_root: Path, importer=_import) -> dict:
    """One evaluation's result dict, or ``{'error': ...}`` when it cannot run."""
    started = time.perf_counter()
    try:
        module = importer(evaluation.module)
        result = module.run(evaluation_args(module, data_root / evaluation.data))
        if not isinstance(result, dict):
            raise TypeError(f"run() returned {type(result).__name__}, not a dict")
    except (Exception, SystemExit) as e:  # argparse exits on bad arguments
        if not isinstance(e, ModuleNotFoundError):
            traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}".strip()}
    return {**result, "seconds_total": round(time.perf_counter() - started, 1)}


def _figure(result: dict, key: str):
    value = result.get(key)
    return value if isinstance(value, (bool, int, float)) else None


def check(target: Target, result: dict) -> tuple[object, object, str]:
    """(value, target value, pass/FAIL/missing) of one target on one result."""
    if "error" in result:
        return None, target.target, MISSING
    value = _figure(result, target.figure)
    goal = _figure(result, target.target) if isinstance(target.target, str) else target.target
    if value is None or goal is None:
        return value, goal, MISSING
    ok = value >= goal if target.op == ">=" else value == goal
    return value, goal, PASS if ok else FAIL


def scalar_figures(result: dict) -> dict:
    """Numbers and booleans of a result, dicts of them flattened one level (``f1_per_type.PER``)."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, (bool, int, float)):
            flat[key] = value
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (bool, int, float)):
                    flat[f"{key}.{sub}"] = v
    return flat


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def table_rows(results: dict[str, dict]) -> list[dict]:
    """One row per figure: the targets first (in TARGETS order), then every
    other figure of each evaluation; a failed or missing evaluation is one row."""
    rows = []
    for evaluation in EVALUATIONS:
        result = results.get(evaluation.name)
        if result is None:
            continue
        if "error" in result:
            rows.append({"evaluation": evaluation.name, "figure": "—", "value": None, "target": "—",
                         "result": f"{MISSING}: {result['error']}"})
            continue
        shown = set()
        for target in (t for t in TARGETS if t.evaluation == evaluation.name):
            value, goal, outcome = check(target, result)
            goal_text = f"{target.op} {_fmt(goal)}"
            if isinstance(target.target, str):
                goal_text += f" ({target.target})"
            rows.append({"evaluation": evaluation.name, "figure": f"{target.figure} — {target.label}",
                         "value": value, "target": goal_text,
                         "result": outcome if outcome != MISSING else f"{MISSING}: figure not reported"})
            shown.add(target.figure)
        for key, value in scalar_figures(result).items():
            if key not in shown:
                rows.append({"evaluation": evaluation.name, "figure": key, "value": value, "target": "",
                             "result": NO_TARGET})
    return rows


def _shown(path: Path) -> str:
    """A path relative to the repo when that is shorter (no machine paths in the report)."""
    try:
        return os.path.relpath(path, REPO)
    except ValueError:
        return str(path)


def render_report(results: dict[str, dict], data_root: Path, command: str, when: datetime) -> str:
    rows = table_rows(results)
    passed = sum(r["result"] == PASS for r in rows)
    failed = sum(r["result"] == FAIL for r in rows)
    missing = sum(r["result"].startswith(MISSING) for r in rows)
    lines = [
        "# newsbeam evaluation report",
        "",
        f"Generated {when.strftime('%Y-%m-%d %H:%M UTC')} by `{command}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}); data: `{_shown(data_root)}/` "
        f"({', '.join(e.data for e in EVALUATIONS if e.name in results)}).",
        "",
        f"Targets: {passed} pass, {failed} fail, {missing} missing.",
        "",
        "| evaluation | figure | value | target | result |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        result = r["result"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['evaluation']} | {r['figure']} | {_fmt(r['value'])} | {r['target']} | {result} |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, text: str) -> None:
    """Write via a temporary file, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def selected(only: str | None) -> tuple[Evaluation, ...]:
    if not only:
        return EVALUATIONS
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {e.name for e in EVALUATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"evaluate.py all: unknown evaluation(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(sorted(known))}")
    return tuple(e for e in EVALUATIONS if e.name in names)


def run(args, importer=_import) -> dict:
    results = {}
    for evaluation in selected(args.only):
        print(f"\n=== {evaluation.name}: evaluation/{evaluation.module}.py --data "
              f"{args.data_root / evaluation.data}", flush=True)
        results[evaluation.name] = run_one(evaluation, args.data_root, importer)
        if "error" in results[evaluation.name]:
            print(f"=== {evaluation.name}: did not run: {results[evaluation.name]['error']}", flush=True)
    command = "scripts/evaluate.py all" + (f" --only {args.only}" if args.only else "")
    report = render_report(results, args.data_root, command, datetime.now(UTC))
    write_report(args.report, report)
    print("\n" + report)
    print(f"report written to {args.report}")
    rows = table_rows(results)
    return {
        "evaluations": results,
        "passed": sum(r["result"] == PASS for r in rows),
        "failed": sum(r["result"] == FAIL for r in rows),
        "missing": sum(r["result"].startswith(MISSING) for r in rows),
        "report": str(args.report),
    }
