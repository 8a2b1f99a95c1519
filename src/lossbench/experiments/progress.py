"""How far a sweep (its cells) or a tuning (its trials) has got: elapsed time and an estimate of what is left.

The estimate of what is left comes from the finished items: their mean seconds times the items left,
over the items run at a time (``--jobs``), when the caller gives each item's seconds (a sweep's cells);
else the wall time per finished item so far times the items left (a tuning's trials). Either way it
counts every cost of an item, not only its training. On a terminal a
tqdm bar on stderr shows it while each finished item still gets its line on stdout; elsewhere (a
log file, CI, a notebook's captured output) each finished item's line ends with the same figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def clock_text(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def on_terminal(log: Callable[[str], Any], stream: TextIO | None = None) -> bool:
    """Whether to draw a bar: lines go to stdout by ``print`` and the bar's stream is a terminal."""
    stream = sys.stderr if stream is None else stream
    return log is print and hasattr(stream, "isatty") and stream.isatty()


class Progress:
    """Progress over ``total`` items (``unit``: "cell", "trial"), ``jobs`` at a time; :meth:`done` once per
    finished item.

    ``bar``: a tqdm bar on ``stream`` (default: stderr) with the lines written through tqdm; default: a
    bar only on a terminal (:func:`on_terminal`). ``clock``: where the seconds come from.
    """

    def __init__(self, total: int, unit: str, log: Callable[[str], Any] = print, *, jobs: int = 1,
                 bar: bool | None = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.unit, self.log, self.clock, self.jobs = total, unit, log, clock, max(1, jobs)
        self.finished = 0
        self.seconds: list[float] = []
        self.started = clock()
        self._bar = None
        if total and (on_terminal(log, stream) if bar is None else bar):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, file=sys.stderr if stream is None else stream,
                             dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} " + unit
                             + "s [{elapsed} elapsed, {remaining} left]")

    def seconds_left(self) -> float | None:
        """What is left, from the items finished so far (None before the first, 0 after the last)."""
        left = self.total - self.finished
        if not self.finished or left <= 0:
            return None if not self.finished else 0.0
        if self.seconds:
            return sum(self.seconds) / len(self.seconds) * left / min(self.jobs, left)
        return (self.clock() - self.started) / self.finished * left

    def eta_text(self) -> str:
        """``elapsed m:ss, about m:ss left`` (no ``left`` before the first item or after the last)."""
        text = f"elapsed {clock_text(self.clock() - self.started)}"
        left = self.seconds_left()
        return text + (f", about {clock_text(left)} left" if left else "")

    def done(self, line: str, seconds: float | None = None) -> None:
        """One more item finished, ``line`` saying how, ``seconds`` how long it took (if known): logged with the
        elapsed time and what is left."""
        self.finished += 1
        if seconds is not None:
            self.seconds.append(seconds)
        if self._bar is None:
            self.log(f"{line}; {self.eta_text()}")
            return
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
