"""Structured logging: one ``key=value`` line per event (logfmt).

``log.info("request", extra={"fields": {...}})`` renders the fields after the
message; plain messages work too. Lines go to stderr.
"""

from __future__ import annotations

import atexit
import io
import logging
import re
import sys
import threading
import time

_NEEDS_QUOTES = re.compile(r'[\s"=]|^$')


def _value(v: object) -> str:
    t = type(v)
    if t is int or t is float:  # their str() is never empty, never has a space, quote or =
        return str(v)
    s = v if isinstance(v, str) else str(v)
    # Most values are printable and have no space, quote or =: four scans in C
    # settle them faster than the regex (every \s but " " is unprintable, so a
    # printable value passing them can not match it).
    if s and s.isprintable() and " " not in s and '"' not in s and "=" not in s:
        return s
    if _NEEDS_QUOTES.search(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class LogfmtFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                              time.gmtime(second))
        line = (f"ts={self._stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"logger={record.name} msg={_value(record.getMessage())}")
        fields = getattr(record, "fields", None)
        if fields:  # one join, not an append per field
            line += "".join([f" {key}={_value(value)}" for key, value in fields.items()])
        if record.exc_info:
            line += f" error={_value(self.formatException(record.exc_info))}"
        return line


class BufferedStderrHandler(logging.StreamHandler):
    """Writes lines to stderr in batches: a write per request costs a system call.

    Lines are flushed at least every ``interval`` seconds and at exit; warnings
    and errors are flushed at once.
    """

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(io.TextIOWrapper(open(sys.stderr.fileno(), "wb", closefd=False),
                                          write_through=False, line_buffering=False))
        self._stop = threading.Event()
        threading.Thread(target=self._flusher, args=(interval,), daemon=True,
                         name="log-flush").start()
        atexit.register(self.flush)

    def _flusher(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            if record.levelno >= logging.WARNING:
                self.flush()
        except Exception:
            self.handleError(record)


def setup(level: str = "info") -> None:
    # The line shows none of a record's thread, process or caller fields: stop
    # logging from looking them up for every record (finding the caller walks
    # the stack: ~2.4% of a 4 KiB GET's instructions). Only servers call this:
    # their root handler is the only one.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python 3.12+
    logging._srcfile = None  # type: ignore[attr-defined]
    handler = BufferedStderrHandler()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
