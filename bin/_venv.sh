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
# The data path compiled with mypyc (zkv/native.py): built on set-up and again once a
# source file is newer than the build; ZKV_NATIVE=0 skips it. A build that fails (no C
# compiler, say) leaves plain Python, which behaves the same, only slower.
if [ "${ZKV_NATIVE:-1}" != 0 ] && [ -f "$root/zkv/native_build.py" ]; then
  manifest="$venv/zkv-native/manifest.json"
  if [ ! -f "$manifest" ] ||
     [ -n "$(find "$root/zkv" -name '*.py' -newer "$manifest" -print -quit)" ]; then
    ZKV_NATIVE=0 "$venv/bin/python" -m zkv.native_build --quiet >&2 || true
  fi
fi
ZKV_PY="$venv/bin/python"
export PATH="$venv/bin:$PATH"
