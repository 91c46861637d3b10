# Sourced by scripts/run and scripts/test: make .venv match requirements.lock.
#
# The venv is rebuilt only when requirements.lock, pyproject.toml or the Python
# interpreter changed since the last install (a stamp records them), so a second
# call is quick. Every package comes from the hashed lock: two machines get the
# same versions, the spaCy models included.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
  if [[ -n "${NEWSBEAM_PYTHON:-}" ]]; then echo "$NEWSBEAM_PYTHON"; return; fi
  # The lock is resolved for CPython 3.11; other versions may need other wheels.
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  echo "newsbeam: no python3 found; install Python 3.11" >&2
  exit 2
}

ensure_venv() {
  local py stamp
  py="$(pick_python)"
  stamp="$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$("$py" -c 'import sys; print(sys.version.split()[0])')"
  exec 9>"$ROOT/.venv.lock"
  flock 9  # two set-ups at once (scripts/run and scripts/test) would corrupt the venv
  if [[ -x "$VENV/bin/python" && -f "$VENV/.newsbeam-stamp" && "$(cat "$VENV/.newsbeam-stamp")" == "$stamp" ]]; then
    flock -u 9
    return
  fi
  echo "newsbeam: setting up $VENV (pinned dependencies from requirements.lock) ..." >&2
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes --no-deps -r "$ROOT/requirements.lock"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --no-deps --no-build-isolation -e "$ROOT"
  echo "$stamp" >"$VENV/.newsbeam-stamp"
  flock -u 9
  echo "newsbeam: environment ready" >&2
}

ensure_venv
# The venv's bin first: Beam's worker pool and multi-process runners start
# workers with the first python on PATH.
export PATH="$VENV/bin:$PATH"
