"""``python tests/integration/synchook.py ARGS``: a node (``zkv node start ARGS``) that
records, for every loop turn, whether the writes it committed reached fsync before
anything acknowledging them left.

SIGKILL cannot tell: the page cache survives it, so a node that never fsyncs, or
replies before its commit, still finds every acknowledged write after a restart.
A power loss would tell, and this is what it would see: each turn appends one line
to ``DATA_DIR/sync-hook.jsonl`` (with O_APPEND, so the lines outlive a SIGKILL):

- ``commits``: commits that wrote something; ``unsynced``: those made while LMDB
  was not fsyncing (data or meta page: ``sync``/``metasync`` off);
- ``replies``: client replies sent; ``acks``: messages sent to peers that
  acknowledge or reveal stored data (anything but the requests the runtime may
  send before its commit);
- ``early``: replies and acks that left while the store still held uncommitted
  writes: a reply ahead of its fsync.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# The hook overrides the runtime's methods and wraps its store's commit: the compiled
# data path calls those natively, past any override, so the hooked node runs the
# sources (the same code; zkv/native.py). Only the node: the tests import this file.
if __name__ == "__main__":
    os.environ["ZKV_NATIVE"] = "0"

from zkv.core.messages import MAX_BATCH, Prepare, ReadRequest, WriteRequest, decode_batch
from zkv.net import runtime

HOOK_LOG = "sync-hook.jsonl"
_MAY_LEAVE_EARLY = (ReadRequest, WriteRequest, Prepare)  # acknowledge nothing


def read_hook_log(data_dir: Path) -> list[dict[str, int]]:
    path = Path(data_dir) / HOOK_LOG
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


class SyncRecordingNode(runtime.NodeProcess):
    def __init__(self, settings: Any, store: Any = None) -> None:
        self._hook_fd = os.open(Path(settings.data_dir) / HOOK_LOG,
                                os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._turn = dict.fromkeys(("commits", "unsynced", "replies", "acks", "early"), 0)
        super().__init__(settings, store)
        inner_commit = self.store.commit

        def commit() -> None:
            before = self.store.commits  # counts only commits that had writes
            flags = self.store._env.flags()
            inner_commit()
            if self.store.commits != before:
                self._turn["commits"] += 1
                if not (flags["sync"] and flags["metasync"]):
                    self._turn["unsynced"] += 1

        self.store.commit = commit

    def _uncommitted(self) -> bool:
        return self.store is not None and self.store._txn is not None

    def _to_client(self, client: bytes, frame: bytes) -> None:
        replies = len(decode_batch(frame, MAX_BATCH))
        self._turn["replies"] += replies
        if self._uncommitted():
            self._turn["early"] += replies
        super()._to_client(client, frame)

    def _to_peer(self, address: str, frame: bytes) -> None:
        acks = sum(1 for message in decode_batch(frame, MAX_BATCH)
                   if not isinstance(message, _MAY_LEAVE_EARLY))
        self._turn["acks"] += acks
        if acks and self._uncommitted():
            self._turn["early"] += acks
        super()._to_peer(address, frame)

    def _apply(self, actions: list[Any]) -> None:
        super()._apply(actions)
        turn = self._turn
        if any(turn.values()):
            os.write(self._hook_fd, (json.dumps(turn) + "\n").encode())
            self._turn = dict.fromkeys(turn, 0)


if __name__ == "__main__":
    from zkv.cli import main

    runtime.NodeProcess = SyncRecordingNode  # serve() builds its node by this name
    sys.argv = ["zkv", "node", "start", *sys.argv[1:]]
    main()
