"""What a long run shows and how it stops: the progress bar, and SIGINT/SIGTERM handling."""

from __future__ import annotations

import collections
import io
import os
import signal
import sys
import time

import tqdm


class Progress:
    """A tqdm bar over counted steps with an honest ETA.

    The ETA is the remaining steps over the rate of the last `window` chunks that started past
    the warm-up (random-action rollouts run at another speed) and were not this call's first
    chunk (it includes compilation); before there is such a chunk it says why it has none.
    Every update is a new line when stderr is not a terminal (logs, CI).
    """

    def __init__(self, total: int, warmup: int, enabled: bool, window: int = 5, clock=time.time):
        self.total, self.warmup, self.enabled, self.clock = total, warmup, enabled, clock
        self.tty = sys.stderr.isatty()
        self.rates: collections.deque = collections.deque(maxlen=window)  # (seconds, steps)
        self.last: tuple[float, int] | None = None
        self.bar = tqdm.tqdm(
            total=total,
            file=sys.stderr if self.tty else io.StringIO(),
            disable=not enabled,
            bar_format="{percentage:5.1f}%|{bar:24}| {desc}",
            dynamic_ncols=True,
            mininterval=0,
        )

    def eta(self, steps: int) -> str:
        if self.rates:
            seconds = sum(dt for dt, _ in self.rates)
            rate = sum(n for _, n in self.rates) / max(seconds, 1e-9)
            if rate > 0:
                left = max(0, self.total - steps) / rate
                return time.strftime("%H:%M:%S", time.gmtime(left))
        return "? (warming up)" if steps < self.warmup else "? (measuring)"

    def update(self, steps: int, ticks_per_s: float, f_mu: float, eval_mean: float) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self.last is not None and self.last[1] >= self.warmup:
            self.rates.append((now - self.last[0], steps - self.last[1]))
        # The first update of a call closes a chunk that started at the call's start (compile).
        self.last = (now, steps)
        self.bar.n = min(steps, self.total)
        self.bar.set_description_str(
            f"steps {steps}/{self.total} | {ticks_per_s:7.1f} ticks/s | f_mu {f_mu:9.2f} | "
            f"eval {eval_mean:9.2f} | ETA {self.eta(steps)}",
            refresh=self.tty,
        )
        if not self.tty:
            print(str(self.bar), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()


class Stop:
    """First SIGINT/SIGTERM: finish the chunk, save, exit. Second: exit at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            print(
                "\nsecond interrupt: exiting now (the last checkpoint is intact)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(130)
        self.requested = True
        print(
            "\ninterrupt: finishing this chunk, saving a checkpoint, then exiting "
            "(interrupt again to exit at once)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
