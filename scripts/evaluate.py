#!/usr/bin/env python
"""Quality evaluations on real data: ``scripts/evaluate.py NAME ...``, NAME one of
{clean,dedupe,dedupe_scripts,encodings,language,ner,all}.

Each subcommand lives in ``scripts/evaluation/<name>.py`` with ``add_arguments(parser)``
and ``run(args) -> dict``; it prints its figures and, as its last line, one JSON
object with the headline numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUBCOMMANDS = ("clean", "dedupe", "dedupe_scripts", "encodings", "language", "ner", "all")


def main(argv: list[str] | None = None) -> int:
    # This checkout's pipelines, not the one a shared venv's editable install points to.
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"evaluation.{name}")
        except ImportError as e:
            # One missing evaluation must not take down the others (``all`` reports it).
            print(f"evaluate.py: {name} unavailable: {e}", file=sys.stderr)
            continue
        modules[name] = module
        sp = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sp)
    args = parser.parse_args(argv)
    result = modules[args.command].run(args)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
