"""The data path compiled with mypyc, used only while it matches the sources exactly.

A node spends most of its CPU in the interpreter running the protocol core, the
records and the replica's store; mypyc compiles those modules from the same
type-annotated source into C extensions (as black and mypy ship themselves).
The build is optional and lives beside the interpreter (``<venv>/zkv-native``),
not in the source tree, so nothing compiled can shadow a source file: its
manifest holds a hash of every ``zkv`` source file, and ``load`` uses the build
only when that hash still matches. After any edit, or without a C compiler,
zkv runs as plain Python, which behaves the same, only slower.

``python -m zkv.native_build`` compiles (``bin/_venv.sh`` does it on set-up and
after edits; ``ZKV_NATIVE=0`` turns both the build and its use off);
``python -m zkv.native_build status`` says which one a process gets.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

# The modules compiled: the protocol core a node steps on every message, the records,
# versions and ring it consults, the replica's store, the node's loop, its metrics and
# event log, the messages and their codec; and the client library's links and routing.
# Left interpreted: the cluster map (its ``cached_property`` would recompute,
# rebuilding rings, on every use), ``zkv.core.lifecycle`` (an Enum), the simulator's
# memory store, the tools around the data path, and ``zkv.client``, whose callers may
# pass anything: it answers a wrong type with InvalidRequest, where compiled code would
# raise its own TypeError.
MODULES = (
    "zkv.model.fields", "zkv.model.record", "zkv.model.tokens", "zkv.model.versions",
    "zkv.storage.base", "zkv.storage.lmdb_store", "zkv.storage.record_cache",
    "zkv.core.actions", "zkv.core.anti_entropy", "zkv.core.backoff",
    "zkv.core.client_policy", "zkv.core.config",
    "zkv.core.coordinator", "zkv.core.digests", "zkv.core.direct_read", "zkv.core.handoff",
    "zkv.core.map_register",
    "zkv.core.membership", "zkv.core.messages", "zkv.core.node", "zkv.core.outbox",
    "zkv.core.quorum", "zkv.core.replica", "zkv.core.ring", "zkv.core.ring_changes",
    "zkv.core.stabilizer", "zkv.core.strays", "zkv.core.streaming", "zkv.core.turn", "zkv.core.walks",
    "zkv.config", "zkv.net.runtime", "zkv.net.eventlog", "zkv.net.metrics",
    "zkv.net.links", "zkv.net.zmtp",
)

PACKAGE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
_state: dict[str, str] = {"mode": "python", "reason": "not loaded yet"}


def build_dir() -> Path:
    """Where this interpreter's build lives: one per virtual environment."""
    return Path(sys.prefix) / "zkv-native"


def signature(package: Path = PACKAGE) -> str:
    """A hash of every source file of the package, names and contents (about 3 ms)."""
    digest = hashlib.sha256(sys.implementation.cache_tag.encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _manifest(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Finder:
    """Finds the compiled modules (and mypyc's shared library) by exact name, before
    the path finders that would find the sources."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


def load() -> str:
    """Use the build for the modules it compiled if it matches the sources; return
    which mode this process runs in, with the reason when it is plain Python."""
    if _state["mode"] == "native":
        return describe()
    if os.environ.get("ZKV_NATIVE", "1") == "0":
        return _python("ZKV_NATIVE=0")
    files, reason = usable(build_dir())
    if files is None:
        return _python(reason)
    failure = activate(files)
    if failure is not None:
        return _python(failure)
    _state.update(mode="native", reason=reason)
    return describe()


def activate(files: dict[str, Path]) -> str | None:
    """Put the compiled modules ahead of the sources, after loading mypyc's shared
    library (all the compiled code) to be sure it loads; None when done, else why
    not, with nothing changed."""
    finder = _Finder(files)
    sys.meta_path.insert(0, finder)
    shared = [name for name in files if name.endswith("__mypyc")]
    try:
        for name in shared:
            importlib.import_module(name)
    except ImportError as exc:
        sys.meta_path.remove(finder)
        for name in shared:
            sys.modules.pop(name, None)
        return f"the build does not load: {exc}"
    return None


def usable(directory: Path) -> tuple[dict[str, Path] | None, str]:
    """The compiled files in ``directory`` by module name, if this process can use
    them, and why (not)."""
    manifest = _manifest(directory)
    if manifest is None:
        return None, f"no build in {directory} (python -m zkv.native_build)"
    if manifest.get("signature") != signature():
        return None, "the sources changed since the build (python -m zkv.native_build)"
    files = {name: directory / file for name, file in manifest.get("files", {}).items()}
    missing = sorted(name for name, file in files.items() if not file.is_file())
    if missing or not files:
        return None, f"the build in {directory} is incomplete ({', '.join(missing)})"
    early = sorted(name for name in files if name in sys.modules)
    if early:
        return None, f"imported before the build was loaded: {', '.join(early)}"
    return files, f"{len(manifest.get('modules', []))} modules compiled by mypyc"


def _python(reason: str) -> str:
    _state.update(mode="python", reason=reason)
    return describe()


def describe() -> str:
    return f"{_state['mode']} ({_state['reason']})"


def native() -> bool:
    return _state["mode"] == "native"
