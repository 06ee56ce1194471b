"""The one progress line of a running job: "tile 2/4 · 6 s elapsed · ≈ 6 s left · 50 %".

The run reports its tiles into it (from its worker thread); whoever shows it reads :meth:`text` when
it likes, so the elapsed time follows the real clock also inside a long tile. It never says 100 %:
the last tile done is not the result written (colour fix, encoding and scoring follow); the page says
100 % with the result itself.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
from typing import Callable, Generator, Optional, TypeVar

from utils.studio.estimates import about, duration

ALMOST = 99  # the most a running job shows, in percent
TICK_SECONDS = 1.0  # how often a page's line is redrawn while its job runs
T = TypeVar("T")


class ProgressLine:
    """Progress of a job of ``count`` images. ``forward(fraction, desc=...)`` (e.g. a gr.Progress) is
    called on every report, for the API's progress events."""

    def __init__(self, forward: Optional[Callable[..., None]] = None, clock: Callable[[], float] = time.monotonic):
        self.forward, self.clock = forward, clock
        self._lock = threading.Lock()
        self.stop = threading.Event()  # set by Cancel; the run stops before its next tile
        self.count = 1
        self.estimate_seconds: Optional[float] = None
        self.start = clock()
        self._place = ("", 0, 0, 0)  # label, image index, tiles done, tiles in the image
        self._fraction_at = (0.0, self.start)  # the job's fraction done, and when it was reported
        self._begun = False                     # before: reading the input, loading the model

    def begin(self, count: int, estimate_seconds: Optional[float] = None, label: str = "") -> None:
        with self._lock:
            self.count, self.estimate_seconds = max(count, 1), estimate_seconds
            self.start = self.clock()
            self._place, self._fraction_at = (label, 0, 0, 0), (0.0, self.start)
            self._begun = True
        self._send()

    def report(self, index: int, done: int, total: int, label: str = "") -> None:
        """Tile ``done`` of ``total`` of image ``index`` (from 0) is finished."""
        with self._lock:
            self._place = (label, index, done, total)
            self._fraction_at = ((index + done / max(total, 1)) / self.count, self.clock())
        self._send()

    @property
    def fraction(self) -> float:
        return self._fraction_at[0]

    def elapsed(self) -> float:
        return self.clock() - self.start

    def text(self) -> str:
        """The line as of now."""
        with self._lock:
            (label, _, done, total), (fraction, reported) = self._place, self._fraction_at
            begun = self._begun
        now = self.clock()
        elapsed = now - self.start
        if not begun:
            return f"starting (reading the input, loading the model) · {duration(elapsed)} elapsed"
        if fraction > 0:
            # The pace up to the last report, counted down by the clock since then.
            left_s = (reported - self.start) * (1 - fraction) / fraction - (now - reported)
            left = "finishing" if fraction >= 1 else f"{about(max(left_s, 0))} left" if left_s > 0 \
                else "any moment now"
        elif self.estimate_seconds is not None:
            left_s = self.estimate_seconds - elapsed
            left = f"{about(left_s)} left (estimate)" if left_s > 0 else "longer than estimated"
        else:
            left = "time left: after the first tile"
        tiles = f"tile {done}/{total} · " if total else ""
        percent = min(int(fraction * 100), ALMOST)
        cancelling = "Cancelling after the current tile · " if self.stop.is_set() else ""
        return f"{cancelling}{label}{tiles}{duration(elapsed)} elapsed · {left} · {percent} %"

    def done_text(self, what: str = "done") -> str:
        """The line once the result is written: "✓ done in 12 s · 100 %"."""
        return f"✓ {what} in {duration(self.elapsed())} · 100 %"

    def _send(self) -> None:
        if self.forward is not None:
            self.forward(self.fraction, desc=self.text())


def ticking(work: Callable[[], T], line: ProgressLine, frame: Callable[[str], object],
            tick: float = TICK_SECONDS) -> Generator[object, None, T]:
    """Run ``work`` in a thread, yielding ``frame(line.text())`` at once and then every ``tick`` seconds
    until it ends; returns its result (or raises its exception). For a page event written as a
    generator: ``result = yield from ticking(...)``."""
    with ThreadPoolExecutor(1, thread_name_prefix="studio-run") as pool:
        future = pool.submit(work)
        while True:
            yield frame(line.text())
            try:
                return future.result(timeout=tick)
            except StillRunning:
                continue
