"""Compile ``zkv.native.MODULES`` with mypyc into this interpreter's build directory.

``python -m zkv.native_build`` builds (if the sources changed since the last
build), ``python -m zkv.native_build status`` says whether this interpreter
runs the compiled modules and why not. The build is all or nothing: mypyc
compiles the modules together, calling each other natively.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from zkv.native import MANIFEST, MODULES, PACKAGE, _manifest, build_dir, load, signature


def build(target: Path | None = None, quiet: bool = False) -> bool:
    """Compile MODULES into a fresh build directory and swap it in for ``target``
    (this interpreter's); False, with the reason on stderr, when it cannot, leaving
    plain Python in use."""
    target = target or build_dir()
    sig = signature()
    manifest = _manifest(target)
    if manifest is not None and manifest.get("signature") == sig:
        (target / MANIFEST).touch()  # newer than the sources again: bin/_venv.sh's check
        if not quiet:
            print(f"zkv.native: the build in {target} is current")
        return True
    log = target.parent / f"{target.name}.log"
    failed = target.parent / f"{target.name}.failed"
    if failed.is_file() and failed.read_text() == sig:
        if not quiet:
            print(f"zkv.native: these sources did not compile before (log: {log})")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"zkv: compiling the data path with mypyc into {target} (two minutes or so; "
          f"ZKV_NATIVE=0 skips it)", file=sys.stderr, flush=True)
    work = Path(tempfile.mkdtemp(prefix=".zkv-native-", dir=target.parent))
    try:
        out = work / "lib"
        paths = [str(PACKAGE.parent / (name.replace(".", "/") + ".py")) for name in MODULES]
        # mypyc writes its C and mypy's cache where it runs: run it in the scratch
        # directory, never in the source tree.
        script = ("import sys\nfrom setuptools import setup\nfrom mypyc.build import mypycify\n"
                  "out, paths = sys.argv[1], sys.argv[2:]\n"
                  "sys.argv[1:] = ['build_ext', '--build-lib', out, '--build-temp', 'temp']\n"
                  "setup(name='zkv_native', ext_modules=mypycify(paths, opt_level='3', "
                  "debug_level='0'))\n")
        env = dict(os.environ, MYPYPATH=str(PACKAGE.parent), ZKV_NATIVE="0")
        done = subprocess.run([sys.executable, "-c", script, str(out), *paths], cwd=work,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            log.write_bytes(done.stdout)
            failed.write_text(sig)  # not tried again until the sources change
            print(f"zkv: the build failed (log: {log}); zkv runs as plain Python, "
                  f"slower but the same", file=sys.stderr)
            return False
        files = {}
        for so in out.rglob("*" + importlib.machinery.EXTENSION_SUFFIXES[0]):
            rel = so.relative_to(out)
            name = ".".join(rel.parts[:-1] + (rel.name.split(".", 1)[0],))
            files[name] = rel.as_posix()
        missing = [name for name in MODULES if name not in files]
        if missing:
            print(f"zkv.native: the build made no module for {', '.join(missing)}",
                  file=sys.stderr)
            return False
        (out / MANIFEST).write_text(json.dumps(
            {"signature": sig, "modules": list(MODULES), "files": files}, indent=1))
        old = target.parent / f".zkv-native-old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        out.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        failed.unlink(missing_ok=True)
        if not quiet:
            print(f"zkv.native: compiled {len(MODULES)} modules into {target}")
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv and not argv[0].startswith("-") else "build"
    if command == "build":
        return 0 if build(quiet="--quiet" in argv) else 1
    if command == "status":
        print(load())
        return 0
    print("usage: python -m zkv.native_build [build] [--quiet] | status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
