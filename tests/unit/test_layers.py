"""No module of zkv imports a module of a higher layer.

Every import counts: at the top of a module, inside a function (a lazy import is
still a dependency), under ``TYPE_CHECKING``. Importing ``zkv.a.b`` also runs
``zkv/a/__init__.py``, so it counts as importing the package ``zkv.a`` as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zkv

PACKAGE = Path(zkv.__file__).parent

# Lowest first; a module may import its own layer and those below it, never above.
# Storage sits below the core so the core can run on any store; the core below its
# drivers so it stays a pure state machine that both drivers (processes and the
# simulator) run; the CLI at the top so that nothing depends on how it parses.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Facts every layer may use: versions, records, ring tokens, errors, exit codes,
    # key files, JSON files replaced whole; the loader of the compiled modules, which
    # every process runs first. They import nothing above themselves.
    ("zkv.model", "zkv.errors", "zkv.exit_codes", "zkv.keys", "zkv.jsonfile", "zkv.native"),
    # Stores know records and tokens, not the protocol.
    ("zkv.storage",),
    # The sans-I/O protocol: events and time in, actions out.
    ("zkv.core",),
    # Where nodes and local clusters live: a node's settings and data directory, a
    # cluster directory's files; and the history checker.
    ("zkv.config", "zkv.cluster_dir", "zkv.check"),
    # The drivers: the node runtime, the simulator; the client library and the probe
    # (the client side of the wire protocol).
    ("zkv.net", "zkv.sim", "zkv.client", "zkv.probe"),
    # Tools that run whole clusters of processes, and their plots; the build of the
    # compiled modules.
    ("zkv.supervisor", "zkv.chaos", "zkv.bench", "zkv.plots", "zkv.native_build"),
    # The command line.
    ("zkv.cli", "zkv.keys_cli", "zkv.__main__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The index of the layer whose longest entry is ``module`` or a package above it."""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            if ((module == entry or module.startswith(entry + "."))
                    and (best is None or len(entry) > best[0])):
                best = (len(entry), index)
    return best[1] if best is not None else None


def imported(module: str, path: Path) -> set[str]:
    """The zkv modules and packages ``module`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                package = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = ".".join(package[:len(package) - drop])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # ``from zkv import supervisor`` imports the module zkv.supervisor
            names = [source] + [f"{source}.{alias.name}" for alias in node.names
                                if f"{source}.{alias.name}" in MODULES]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "zkv":
                continue
            # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    found.discard(module)
    return found


def test_every_module_has_a_layer() -> None:
    homeless = [m for m in MODULES if m != "zkv" and layer_of(m) is None]
    assert not homeless, f"add these modules to a layer in LAYERS: {homeless}"


def test_every_layer_entry_names_a_module() -> None:
    stale = [e for layer in LAYERS for e in layer if e not in MODULES]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, path in MODULES.items():
        own = layer_of(module)
        if own is None:
            continue
        for target in sorted(imported(module, path)):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_walk_sees_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    """The check itself: imports inside functions and relative ones are found, and
    importing a module counts as importing the packages above it."""
    source = tmp_path / "walks.py"
    source.write_text(
        "from zkv.core.ring import Ring\n"
        "from . import messages\n"
        "from ..storage import base\n"
        "def later():\n"
        "    import zkv.net.runtime\n"
    )
    assert imported("zkv.core.walks", source) == {
        "zkv.core", "zkv.core.ring", "zkv.core.messages", "zkv.storage", "zkv.storage.base",
        "zkv.net", "zkv.net.runtime"}
    assert layer_of("zkv.core.walks") == 2 and layer_of("zkv.net.runtime") == 4
