"""Virtual time and the simulator's single event queue.

Nothing in the simulator reads the wall clock: time only moves when the
scheduler pops the next event. Events due at the same instant run in the order
they were scheduled (a sequence number breaks ties), so a run is a pure
function of its seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Timer:
    """A scheduled callback; ``cancel()`` makes it a no-op (it is skipped when popped)."""

    __slots__ = ("time", "fn", "args", "pending")

    def __init__(self, time: float, fn: Callable[..., Any], args: tuple) -> None:
        self.time = time
        self.fn = fn
        self.args = args
        self.pending = True  # False once fired or cancelled

    def cancel(self) -> None:
        self.pending = False

    def __repr__(self) -> str:
        state = "" if self.pending else " done"
        return f"<Timer t={self.time:.6f} {getattr(self.fn, '__qualname__', self.fn)}{state}>"


class Scheduler:
    """A virtual clock plus a heap of timers ordered by (time, sequence number)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self.executed = 0

    def call_at(self, time: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run ``fn(*args)`` at virtual ``time`` (never earlier than now)."""
        timer = Timer(max(time, self.now), fn, args)
        self._seq += 1
        heapq.heappush(self._heap, (timer.time, self._seq, timer))
        return timer

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self.now + max(delay, 0.0), fn, *args)

    def next_time(self) -> float | None:
        """When the next live timer is due, or None when nothing is scheduled."""
        heap = self._heap
        while heap and not heap[0][2].pending:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def step(self) -> bool:
        """Run the next live timer; False when the queue is empty."""
        heap = self._heap
        while heap:
            time, _, timer = heapq.heappop(heap)
            if not timer.pending:
                continue
            self.now = time
            timer.pending = False
            self.executed += 1
            timer.fn(*timer.args)
            return True
        return False

    def run_until(self, time: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run every timer due at or before ``time``, then set the clock to ``time``.

        With ``stop``, it is checked after each timer and the run halts (clock left
        at that timer's time) as soon as it returns True; the result says whether
        it did.
        """
        if stop is not None and stop():
            return True
        heap = self._heap
        while heap:
            head_time, _, head = heap[0]
            if not head.pending:
                heapq.heappop(heap)
                continue
            if head_time > time:
                break
            self.step()
            if stop is not None and stop():
                return True
        self.now = max(self.now, time)
        return False

    def __len__(self) -> int:
        """Number of queued timers, including cancelled ones not yet discarded."""
        return len(self._heap)
