"""Per-epoch reporting for ``cbackprop train``: a tqdm progress bar over the epochs when
stdout is a terminal and tqdm is installed, plain lines otherwise.

tqdm is optional: it is imported only when a bar is wanted, and its absence is not an error.
With a bar, each epoch's line is still printed (above the bar, through tqdm.write), so the
terminal keeps the same record as a log file; the bar adds the elapsed time and an estimate
of the time left.
"""
from __future__ import annotations

import os
import sys


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _has_size(stream):
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return size.columns > 0 and size.lines > 0


class EpochProgress:
    """report(line, accuracy) after every epoch; close() at the end (or use as a context
    manager).  quiet: print nothing.  stream: default sys.stdout (looked up when created)."""

    def __init__(self, total, *, quiet=False, stream=None, desc="training"):
        self.quiet = quiet
        self.stream = sys.stdout if stream is None else stream
        self.bar = None
        if not quiet and _isatty(self.stream):
            tqdm = _tqdm()
            if tqdm is not None:
                # A terminal that reports no size (a bare pty) would get no bar at all.
                width = {"dynamic_ncols": True} if _has_size(self.stream) else {"ncols": 80, "nrows": 24}
                self.bar = tqdm(total=total, desc=desc, unit="epoch", file=self.stream,
                                leave=False, mininterval=0, **width)  # epochs are coarse: draw each

    @property
    def uses_bar(self):
        return self.bar is not None

    def write(self, line):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def report(self, line, accuracy=None):
        """One epoch finished: print its line and advance the bar."""
        self.write(line)
        if self.bar is not None:
            if accuracy is not None:
                self.bar.set_postfix_str(f"test {accuracy:.2f}%", refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
