"""The compiled data path is used exactly when it matches the sources, and its absence
(no build, a stale or partial one, no C compiler, ZKV_NATIVE=0) leaves plain Python."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zkv.core.cluster_map
import zkv.core.node
from zkv import native, native_build

EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]


def run_python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_a_current_build_is_what_the_processes_run() -> None:
    if not native.native():
        pytest.skip(f"this interpreter runs plain Python: {native.describe()}")
    assert zkv.core.node.__file__ is not None and zkv.core.node.__file__.endswith(EXTENSION)
    assert zkv.core.cluster_map.__file__ is not None
    assert zkv.core.cluster_map.__file__.endswith(".py")  # not in MODULES
    line = run_python("import zkv.core.replica as r, zkv.native as n; "
                      "print(r.__file__, n.describe())")
    assert line.startswith(str(native.build_dir())) and "native (" in line, line


def test_zkv_native_0_runs_the_sources() -> None:
    line = run_python("import zkv.core.replica as r, zkv.native as n; "
                      "print(r.__file__, n.describe())", ZKV_NATIVE="0")
    assert line == f"{Path(zkv.__file__).parent / 'core' / 'replica.py'} python (ZKV_NATIVE=0)"


def test_a_missing_stale_or_partial_build_is_not_used(tmp_path: Path) -> None:
    files, reason = native.usable(tmp_path)
    assert files is None and reason.startswith("no build in")

    def write(signature: str, files: dict[str, str]) -> None:
        (tmp_path / native.MANIFEST).write_text(json.dumps(
            {"signature": signature, "modules": list(files), "files": files}))

    write("0" * 64, {"zkv.core.ring": "zkv/core/ring" + EXTENSION})
    files, reason = native.usable(tmp_path)
    assert files is None and reason.startswith("the sources changed"), reason

    write(native.signature(), {"zkv.core.ring": "zkv/core/ring" + EXTENSION})
    files, reason = native.usable(tmp_path)
    assert files is None and "incomplete (zkv.core.ring)" in reason, reason

    (tmp_path / "zkv" / "core").mkdir(parents=True)
    (tmp_path / "zkv" / "core" / ("ring" + EXTENSION)).write_bytes(b"")
    files, reason = native.usable(tmp_path)  # zkv.core.ring is imported already
    assert files is None and "imported before the build was loaded: zkv.core.ring" in reason


def test_a_build_that_does_not_load_leaves_the_sources_in_use(tmp_path: Path) -> None:
    broken = tmp_path / ("0123zkvtest__mypyc" + EXTENSION)
    broken.write_bytes(b"not a shared library")
    finders = list(sys.meta_path)
    failure = native.activate({"0123zkvtest__mypyc": broken})
    assert failure is not None and failure.startswith("the build does not load: "), failure
    assert sys.meta_path == finders and "0123zkvtest__mypyc" not in sys.modules


def test_the_signature_follows_every_source_file(tmp_path: Path) -> None:
    package = tmp_path / "zkv"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core" / "ring.py").write_text("A = 1\n")
    first = native.signature(package)
    (package / "core" / "ring.py").write_text("A = 2\n")
    second = native.signature(package)
    (package / "core" / "other.py").write_text("")
    assert len({first, second, native.signature(package)}) == 3


def test_without_a_c_compiler_the_build_fails_cleanly(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CC", "false")  # setuptools compiles with $CC
    target = tmp_path / "zkv-native"
    assert native_build.build(target, quiet=True) is False
    assert not target.exists()
    err = capsys.readouterr().err
    assert f"the build failed (log: {tmp_path / 'zkv-native.log'})" in err
    assert "false' failed" in (tmp_path / "zkv-native.log").read_text()
    assert (tmp_path / "zkv-native.failed").read_text() == native.signature()
    # The same sources are not tried again (every bin/ command would wait for it).
    assert native_build.build(target, quiet=True) is False
    assert "compiling" not in capsys.readouterr().err
