"""The progress-line protocol: Progress writes JSON lines to $BASALT_PROGRESS_FD
(basalt/progress.py) and the admin API's volume jobs read them (basalt/volume_jobs.py)."""

from __future__ import annotations

import io
import json
import os

import pytest

from basalt.progress import Progress
from basalt.volume_jobs import Job, apply_progress


@pytest.fixture
def pipe(monkeypatch):
    read_fd, write_fd = os.pipe()
    monkeypatch.setenv("BASALT_PROGRESS_FD", str(write_fd))
    reader = os.fdopen(read_fd, "rb")

    def lines() -> list[dict]:
        os.close(write_fd)
        return [json.loads(line) for line in reader.read().splitlines()]
    yield lines
    reader.close()


def test_lines_are_written_terminal_or_not_and_the_stream_stays_quiet(pipe, monkeypatch):
    monkeypatch.setenv("CI", "true")
    stream = io.StringIO()
    p = Progress(stream, interval=0)
    p.update("restore: 1.0 MiB of 4.0 MiB", done=1 << 20, total=4 << 20)
    p.update("prune: 3 / 9 packs deleted")  # free text: no counts
    p.bytes("importing x", 5, 10)
    p.done("imported x")
    assert stream.getvalue() == "imported x\n"  # off a terminal: only the final line
    assert pipe() == [
        {"text": "restore: 1.0 MiB of 4.0 MiB", "done": 1 << 20, "total": 4 << 20},
        {"text": "prune: 3 / 9 packs deleted", "done": None, "total": None},
        {"text": "importing x [##########----------] 5 B / 10 B (50%)", "done": 5, "total": 10},
        {"text": "imported x", "end": True}]


def test_lines_are_throttled_but_a_counts_end_is_never_dropped(pipe, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("basalt.progress.time.monotonic", lambda: clock[0])
    p = Progress(io.StringIO(), interval=1.0)
    for done in (1, 2, 3):
        p.update(f"backup {done}", done=done, total=4)
    clock[0] += 1.5
    p.update("backup 3.5", done=3, total=4)
    p.update("backup 4", done=4, total=4)
    assert [line["text"] for line in pipe()] == ["backup 1", "backup 3.5", "backup 4"]


def test_a_reader_gone_stops_the_lines_not_the_work(monkeypatch):
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    monkeypatch.setenv("BASALT_PROGRESS_FD", str(write_fd))
    try:
        p = Progress(io.StringIO(), interval=0)
        p.update("x", done=1, total=2)  # EPIPE: swallowed, and no more tries
        assert p.fd is None
    finally:
        os.close(write_fd)


def test_without_the_variable_nothing_is_written(monkeypatch):
    monkeypatch.delenv("BASALT_PROGRESS_FD", raising=False)
    assert Progress(io.StringIO()).fd is None


def test_a_job_takes_counts_rate_and_time_left_from_the_lines():
    job = Job("j1", "backup", "vol", "s3://b/p")
    apply_progress(job, {"text": "starting", "done": None, "total": None}, 0.0)
    assert (job.text, job.done_bytes, job.total_bytes) == ("starting", 0, None)
    apply_progress(job, {"text": "a", "done": 0, "total": 1000}, 10.0)
    assert job.as_dict()["rate"] is None  # one sample: no rate yet
    apply_progress(job, {"text": "b", "done": 200, "total": 1000}, 12.0)
    apply_progress(job, "not an object", 12.5)
    apply_progress(job, {"text": "c", "done": True, "total": 1000}, 12.5)  # not a count
    doc = job.as_dict()
    assert (doc["done_bytes"], doc["total_bytes"], doc["text"]) == (200, 1000, "c")
    assert doc["rate"] == 100.0 and doc["eta_seconds"] == 8.0
    # the rate is measured over the last few seconds only
    apply_progress(job, {"text": "d", "done": 900, "total": 1000}, 20.0)
    apply_progress(job, {"text": "e", "done": 950, "total": 1000}, 21.0)
    assert job.as_dict()["rate"] == 50.0
    job.state = "done"
    assert job.as_dict()["rate"] is None and job.as_dict()["eta_seconds"] is None
