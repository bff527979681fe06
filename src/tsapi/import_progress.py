"""The progress bar of ``tsapi import``: on a terminal only, on stderr; readings so far, readings
per second and the time left, estimated from how much of the files has been read."""

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_bytes: int) -> None:
        self.bar = tqdm(
            total=total_bytes or None,  # unknown for stdin: no percentage, no time left
            unit="B",
            unit_scale=True,
            disable=not sys.stderr.isatty(),
            bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]"
            if total_bytes
            else "{desc} [{elapsed}]",
            file=sys.stderr,
        )
        self.started = time.monotonic()
        self.readings = 0
        self.done_bytes = 0  # in the files before the current one

    def advance(self, position: int, readings: int) -> None:
        self.readings += readings
        rate = self.readings / max(time.monotonic() - self.started, 1e-9)
        self.bar.set_description_str(f"{self.readings:,} readings, {rate:,.0f} readings/s", False)
        self.bar.update(self.done_bytes + position - self.bar.n)

    def next_file(self, size: int) -> None:
        self.done_bytes += size

    def close(self) -> None:
        self.bar.close()
