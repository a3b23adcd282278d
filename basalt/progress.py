"""Progress lines for long CLI work (heal, imports, backups, restores).

On a terminal one line on stderr is redrawn in place: for byte counts a bar,
the amount, the rate and the time left (``importing x [#####-----] 1.0 GiB /
2.0 GiB (50%) 210.4 MiB/s ETA 0:00:05``). Elsewhere (CI, pipes, log files)
nothing is drawn while the work runs (nor under ``CI=true``): only the final
line given to :meth:`Progress.done`, so logs stay clean.

When ``$BASALT_PROGRESS_FD`` names an open file descriptor (a pipe the parent
reads: the admin API's volume jobs, basalt/volume_jobs.py), every update is
also written there as one JSON line, terminal or not: ``{"text": ..., "done":
BYTES | null, "total": BYTES | null}`` at most every `interval` seconds, and
``{"text": ..., "end": true}`` for a final line. Each line is one ``write``
under PIPE_BUF bytes, so lines never interleave.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TextIO

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
BAR = 20
RATE_AFTER = 0.5  # seconds of work before a rate means anything
PROGRESS_FD = "BASALT_PROGRESS_FD"
LINE_TEXT = 300  # characters of text a JSON line carries (a line stays under PIPE_BUF)


class Progress:
    def __init__(self, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        if os.environ.get("CI", "").lower() in ("true", "1"):
            self.tty = False  # CI logs keep only final lines, whatever terminal they run in
        self.interval = interval
        self.fd = _progress_fd()
        self._last = 0.0
        self._shown = False
        self._began: dict[str, tuple[float, int]] = {}  # label → (start, bytes done then)

    def update(self, text: str, force: bool = False, *, done: int | None = None,
               total: int | None = None) -> None:
        """Redraw the line (terminals only) and write a progress line (with the
        byte counts `done` of `total` when given), at most every `interval` seconds."""
        if not self.tty and self.fd is None:
            return
        now = time.monotonic()
        force = force or (done is not None and done == total)  # a count's end is never dropped
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.fd is not None:
            self._line({"text": text, "done": done, "total": total})
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._shown = True

    def _line(self, doc: dict) -> None:
        doc["text"] = doc["text"][:LINE_TEXT]
        try:
            os.write(self.fd, json.dumps(doc).encode() + b"\n")
        except OSError:  # the reader went away (or never was): stop writing there
            self.fd = None

    def bytes(self, label: str, done: int, total: int | None = None,
              force: bool = False) -> None:
        """``label [##--] 120.0 MiB / 2.0 GiB (6%) 80.0 MiB/s ETA 0:00:24``; without
        a total, ``label: 120.0 MiB 80.0 MiB/s``."""
        if not self.tty and self.fd is None:
            return
        now = time.monotonic()
        began, base = self._began.setdefault(label, (now, done))
        elapsed = now - began
        rate = (done - base) / elapsed if elapsed >= RATE_AFTER else None
        self.update(progress_text(label, done, total, rate, bar=True), force,
                    done=done, total=total)

    def counter(self, label: str, total: int | None = None) -> Counter:
        """A callback that adds its argument to a byte count and shows it
        (boto3's ``Callback=``)."""
        return Counter(self, label, total)

    def done(self, text: str | None = None) -> None:
        """End the line; `text` is the final line (printed on a terminal or not)."""
        if self.fd is not None and text is not None:
            self._line({"text": text, "end": True})
        if self.tty:
            if text is not None:
                self.update(text, force=True)
            if self._shown:
                self.stream.write("\n")
                self.stream.flush()
            self._shown = False
        elif text is not None:
            self.stream.write(text + "\n")
            self.stream.flush()


def _progress_fd() -> int | None:
    """The descriptor $BASALT_PROGRESS_FD names, or None."""
    value = os.environ.get(PROGRESS_FD, "")
    return int(value) if value.isdigit() else None


class Counter:
    """Bytes done so far (``.done``), shown as ``label: done / total (N%)``."""

    def __init__(self, progress: Progress, label: str, total: int | None) -> None:
        self.progress, self.label, self.total, self.done = progress, label, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.progress.bytes(self.label, self.done, self.total)


def progress_text(label: str, done: int, total: int | None = None,
                  rate: float | None = None, bar: bool = False) -> str:
    """``label: done / total (N%)``, with a bar, the rate and the time left when asked."""
    speed = f" {human_bytes(rate)}/s" if rate else ""
    if not total:
        return f"{label}: {human_bytes(done)}{speed}"
    percent = round(done * 100 / total)
    if done < total:
        percent = min(percent, 99)  # 100% only when it is all there
    amount = f"{human_bytes(done)} / {human_bytes(total)} ({percent}%)"
    if rate and done < total:
        speed += f" ETA {_clock((total - done) / rate)}"
    if bar:
        filled = min(BAR, done * BAR // total)
        return f"{label} [{'#' * filled}{'-' * (BAR - filled)}] {amount}{speed}"
    return f"{label}: {amount}{speed}"


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def human_bytes(n: float) -> str:
    """``0 B``, ``512 B``, ``1.5 KiB`` ... ``97.7 PiB`` (binary units)."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in UNITS[1:]:
        n /= 1024
        if abs(n) < 1024 or unit == UNITS[-1]:
            break
    return f"{n:.1f} {unit}"
