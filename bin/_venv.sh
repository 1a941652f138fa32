# Sourced by bin/ scripts and .ci/run: make sure .venv exists and holds an up-to-date
# install of zkv with its test extra and its dev extra (the pinned ruff and mypy).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.zkv-installed"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    echo "zkv: creating .venv (first run, ~20 s)" >&2
    python3 -m venv "$venv" >&2
  else
    echo "zkv: updating .venv (pyproject.toml changed)" >&2
  fi
  # The install's output (pip's and the build backend's editable-install banner) goes to
  # a log, shown only if the install fails.
  log="$venv/install.log"
  if ! { "$venv/bin/python" -m pip install --quiet --upgrade pip \
         && "$venv/bin/python" -m pip install --quiet -e "$root[test,dev]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "zkv: installing zkv into .venv failed (log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
ZKV_PY="$venv/bin/python"
export PATH="$venv/bin:$PATH"
