"""Tuning Python's garbage collector for a serving process.

Ingest makes a few tracked objects per reading (rows, cells, tuples) that live until their batch
is written. At the default thresholds the collector runs every 700 of them, and each pass that
finds them alive promotes them, soon forcing full passes over the whole heap: about an eighth of
a process's CPU under CSV ingest. Frozen, the objects of the started process (modules, the app,
the pool) are left out of every pass; with a higher first threshold, far fewer passes run.
"""

import gc

FIRST_THRESHOLD = 10_000  # Python's default is 700


def tune() -> None:
    """Call once a serving process has built its app."""
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_THRESHOLD, second, third)
