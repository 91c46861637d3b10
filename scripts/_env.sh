# Sourced by scripts/run and scripts/test: make .venv match requirements.lock.
#
# The venv is rebuilt only when requirements.lock, pyproject.toml or the Python
# interpreter changed since the last install (a stamp records them), so a second
# call is quick. Every package comes from the hashed lock: two machines get the
# same versions, the spaCy models included.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# The lock is resolved for CPython 3.12 (the default English model needs it).
NEWSBEAM_PYTHON_MINOR="3.12"

_is_wanted_python() {
  # A pyenv shim is on PATH even when its version is not selected, and then
  # fails when run: a candidate counts only if it runs and says 3.12.
  # It must print the version: a program that ignores -c and exits 0 is not Python.
  [[ "$("$1" -c "import sys; print('%d.%d' % sys.version_info[:2])" 2>/dev/null)" == "$NEWSBEAM_PYTHON_MINOR" ]]
}

pick_python() {
  local candidate root
  if [[ -n "${NEWSBEAM_PYTHON:-}" ]]; then
    if _is_wanted_python "$NEWSBEAM_PYTHON"; then echo "$NEWSBEAM_PYTHON"; return; fi
    echo "newsbeam: NEWSBEAM_PYTHON=$NEWSBEAM_PYTHON is not a working Python $NEWSBEAM_PYTHON_MINOR" >&2
    exit 2
  fi
  if command -v "python$NEWSBEAM_PYTHON_MINOR" >/dev/null 2>&1 && _is_wanted_python "python$NEWSBEAM_PYTHON_MINOR"; then
    command -v "python$NEWSBEAM_PYTHON_MINOR"; return
  fi
  # pyenv installs it without putting it on PATH unless selected.
  root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  # Newest patch release first.
  for candidate in $(printf '%s\n' "$root"/versions/"$NEWSBEAM_PYTHON_MINOR".*/bin/python"$NEWSBEAM_PYTHON_MINOR" | sort -rV); do
    if _is_wanted_python "$candidate"; then echo "$candidate"; return; fi
  done
  echo "newsbeam: no Python $NEWSBEAM_PYTHON_MINOR found (looked at NEWSBEAM_PYTHON, python$NEWSBEAM_PYTHON_MINOR on PATH," \
       "and \$(pyenv root)/versions/$NEWSBEAM_PYTHON_MINOR.*); install Python $NEWSBEAM_PYTHON_MINOR or set" \
       "NEWSBEAM_PYTHON=/path/to/python$NEWSBEAM_PYTHON_MINOR" >&2
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
  # A venv made by another interpreter (3.11 before the move to 3.12) is rebuilt, not patched.
  if [[ ! -x "$VENV/bin/python" ]] || [[ "$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)" \
        != "$("$py" -c 'import sys; print(sys.version.split()[0])')" ]]; then
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

# scripts/lock only needs pick_python.
if [[ "${NEWSBEAM_ENV_FUNCTIONS_ONLY:-0}" == 1 ]]; then return 0; fi

ensure_venv
# The venv's bin first: Beam's worker pool and multi-process runners start
# workers with the first python on PATH.
export PATH="$VENV/bin:$PATH"
