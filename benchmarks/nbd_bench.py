#!/usr/bin/env python3
"""NBD block I/O: Basalt volumes beside qemu-nbd and nbdkit, same machine, same run.

Three servers start on 127.0.0.1 (free ports, fresh temp data dirs, killed and
removed at the end, also on errors and Ctrl-C): qemu-nbd and nbdkit's file
plugin each on a sparse 4 GiB raw file, and ``basalt serve`` with a 4 GiB thin
volume (benchmarks/nbd_peers.py says which flags and why). One client, fio's
nbd ioengine (libnbd, one connection per job), drives the same jobs on each:

    verify         64 MiB 1 MiB writes, 4 KiB overwrites of them, 32 MiB of fresh
                   4 KiB writes, all read back with crc32c (a wrong byte stops
                   that server: it gets no numbers and the run exits 3)
    fill           sequential 1 MiB writes over the whole --size region of the
                   fresh export (first writes: the thin allocation path)
    1M seq write   MB/s, time based        4k rand write   IOPS, time based
    1M seq read    MB/s, time based        4k rand read    IOPS, time based
    4k rand write x4, 4k rand read x4: the same with fio --numjobs=4, each job
                   its own NBD connection (multi-conn), IOPS summed. qemu-nbd
                   runs these in its default configuration and again with each
                   of nbd_peers.QEMU_VARIANTS (--aio=io_uring / native,
                   --cache=none) on the same filled file; Basalt is compared
                   with the best of them, and every configuration is printed.

All at --iodepth (32) per connection. The targets are the issue's (15): every
row at least 1.0x qemu-nbd. The report starts with the machine's figures
(cores, memory, the disk and file system under the data dirs).

The fill runs first, so every read row reads data that was written (holes,
which thin servers answer without touching storage, would be unfairly fast);
``nbdinfo --map`` checks the region has no hole left before the reads. Rows
run server after server with the first server rotating per row, and ``sync``
before each run so one server's dirty pages do not slow the next. No row
sends NBD FLUSH unless --flush-every is given; reads come from warm caches on
every server. MB = 10^6 bytes.

    .venv/bin/python benchmarks/nbd_bench.py                        # all three
    .venv/bin/python benchmarks/nbd_bench.py --only qemu-nbd,nbdkit # peers only
    .venv/bin/python benchmarks/nbd_bench.py --runtime 30 --repeat 3 --json
    .venv/bin/python benchmarks/nbd_bench.py --basalt-args "--no-fsync"
    .venv/bin/python benchmarks/nbd_bench.py --encrypted --runtime 10 --repeat 3

``--encrypted`` (issue 16) runs Basalt only: one server with a plain and an
encrypted (``volume create --encrypted``) 4 GiB volume, each filled over --size,
then 4k random write and read on each, alternating which goes first, and the
encrypted/plain ratio per row (target: at least 0.8): the ratio of the two
medians, and beside it ("paired") the median of the per-round ratios. A round
runs both volumes back to back under one machine load, while the load of a
shared machine drifts between rounds (rounds of one volume vary up to 1.7x), so
the paired figure compares like with like; both are printed.

``--rows`` picks timed rows by name for a short run, e.g.
``--only basalt,qemu-nbd --rows "4k rand write,4k rand read"``.

Needs: apt-get install -y fio qemu-utils nbdkit libnbd-bin
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbd_peers  # noqa: E402
import peers  # noqa: E402
from nbd_peers import EXPORT_SIZE, NbdServer, ServerError  # noqa: E402

SERVERS = ("basalt", "qemu-nbd", "nbdkit")
BASELINE = "qemu-nbd"
MIB = 1 << 20
VERIFY_SPAN = 128 * MIB   # at the end of the export, outside the --size region
EXIT_ROW_FAILED, EXIT_NO_SERVER, EXIT_WRONG_DATA = 1, 2, 3


class FioError(RuntimeError):
    """fio failed, or its job reported an error."""


class WrongData(RuntimeError):
    """A server returned bytes other than those written to it."""


# -- fio ---------------------------------------------------------------------

def fio_binary() -> str:
    path = shutil.which("fio")
    if not path:
        raise ServerError("fio not found: apt-get install -y fio")
    return path


def run_fio(args: list[str], workdir: str, timeout: float) -> tuple[dict, str]:
    """Run fio with ``--output-format=json`` in ``workdir``; return (report,
    stderr). Raises FioError when fio fails or a job reports an error."""
    output = os.path.join(workdir, "fio.json")
    command = [fio_binary(), "--output-format=json", f"--output={output}", *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir,
                            timeout=timeout)
    stderr = result.stderr.strip()
    report = read_report(output)
    if result.returncode != 0 or report is None:
        what = "no JSON report" if report is None else "error"
        raise FioError(f"fio exited {result.returncode} ({what}):"
                       f" {tail(stderr) or '(no stderr)'}")
    failed = [job for job in report["jobs"] if job.get("error")]
    if failed:
        raise FioError(f"fio job {failed[0]['jobname']} error {failed[0]['error']}:"
                       f" {tail(stderr)}")
    return report, stderr


def read_report(path: str) -> dict | None:
    """fio's JSON report; with --thread the nbd engine's "fio: connected to
    NBD server" line lands in the file before it, so start at the first '{'."""
    try:
        with open(path) as handle:
            text = handle.read()
        start = re.search(r"^\{", text, re.MULTILINE)
        return json.loads(text[start.start():]) if start else None
    except (OSError, ValueError):
        return None


def tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.splitlines()[-lines:])


def fio_target(server: NbdServer, iodepth: int) -> list[str]:
    """fio options that point a job at a server's export."""
    return ["--ioengine=nbd", "--thread", f"--uri={server.uri}", f"--iodepth={iodepth}",
            "--verify_state_save=0"]


# -- correctness ---------------------------------------------------------------

def verify_server(server: NbdServer, options: argparse.Namespace, workdir: str) -> None:
    """Write, overwrite and read back with crc32c in a span outside the timed
    region: whole 1 MiB blocks, 4 KiB overwrites inside them (partial chunks
    of allocated data) and 4 KiB writes to never-written space (partial chunks
    of holes), 32 in flight. Raises WrongData on any mismatch."""
    base = EXPORT_SIZE - VERIFY_SPAN
    args = [*fio_target(server, options.iodepth), "--verify=crc32c", "--do_verify=1",
            "--verify_fatal=1",
            "--name=verify-1m-write", "--rw=write", "--bs=1M",
            f"--offset={base}", f"--size={64 * MIB}",
            "--name=verify-4k-overwrite", "--stonewall", "--rw=randwrite", "--bs=4k",
            f"--offset={base}", f"--size={64 * MIB}",
            "--name=verify-4k-fresh", "--stonewall", "--rw=randwrite", "--bs=4k",
            f"--offset={base + 64 * MIB}", f"--size={32 * MIB}"]
    try:
        report, _ = run_fio(args, workdir, timeout=options.timeout + 600)
    except FioError as err:
        if re.search(r"bad magic|bad header|verify: bad|verify failed|type mismatch",
                     str(err)):
            raise WrongData(f"{server.name} returned wrong data: {err}") from None
        raise
    for job in report["jobs"]:
        written, read = job["write"]["io_bytes"], job["read"]["io_bytes"]
        if written == 0 or read < written:
            raise WrongData(f"{server.name}: {job['jobname']} wrote {written} bytes"
                            f" but verified only {read}")


def hole_bytes(server: NbdServer, size: int) -> int | None:
    """Bytes in [0, size) that the server's base:allocation map reports as a
    hole; None when ``nbdinfo --map`` is unavailable or fails."""
    try:
        result = subprocess.run(["nbdinfo", "--map", "--json", server.uri],
                                capture_output=True, text=True, timeout=60)
        extents = json.loads(result.stdout) if result.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    if extents is None:
        return None
    holes = 0
    for extent in extents:
        start, end = extent["offset"], min(extent["offset"] + extent["length"], size)
        if start < size and extent["type"] & 1:  # NBD_STATE_HOLE
            holes += end - start
    return holes


# -- rows ----------------------------------------------------------------------

@dataclass
class Row:
    """One fio job per server; ``target`` is the Basalt/qemu-nbd ratio to meet."""

    name: str
    rw: str
    bs: str
    unit: str                # "MB/s" or "IOPS"
    target: float | None
    timed: bool = True       # time based (--runtime); else one pass over --size
    jobs: int = 1            # fio --numjobs: connections, each at --iodepth


FILL = Row("fill 1M seq write", "write", "1M", "MB/s", None, timed=False)
ROWS = [
    Row("1M seq write", "write", "1M", "MB/s", 1.0),
    Row("4k rand write", "randwrite", "4k", "IOPS", 1.0),
    Row("1M seq read", "read", "1M", "MB/s", 1.0),
    Row("4k rand read", "randread", "4k", "IOPS", 1.0),
]
# Compared with qemu-nbd's best configuration (the default or a QEMU_VARIANTS one).
MULTI_ROWS = [
    Row("4k rand write x4", "randwrite", "4k", "IOPS", 1.0, jobs=4),
    Row("4k rand read x4", "randread", "4k", "IOPS", 1.0, jobs=4),
]


@dataclass
class Measurement:
    """One row on one server. ``value`` is None when the row failed."""

    value: float | None
    seconds: float = 0.0      # fio's measured runtime (ramp excluded)
    p50_ms: float = 0.0       # completion latency
    p99_ms: float = 0.0
    client_cpu: float = 0.0   # fio CPU / its runtime (1.0 = one core)
    server_cpu: float = 0.0   # server process group CPU s / wall s of the fio run
    error: str | None = None


def row_args(row: Row, server: NbdServer, options: argparse.Namespace) -> list[str]:
    """fio options for ``row`` on ``server`` over the [0, --size) region."""
    args = [*fio_target(server, options.iodepth), f"--name={row.name.replace(' ', '-')}",
            f"--rw={row.rw}", f"--bs={row.bs}", "--offset=0", f"--size={options.size}"]
    if row.jobs > 1:
        args += [f"--numjobs={row.jobs}", "--group_reporting"]
    if row.timed:
        args += ["--time_based", f"--runtime={round(options.runtime * 1000)}ms",
                 f"--ramp_time={round(options.ramp_time * 1000)}ms"]
    if options.flush_every and "write" in row.rw:
        args.append(f"--fsync={options.flush_every}")
    return args


def measure(row: Row, server: NbdServer, options: argparse.Namespace,
            workdir: str) -> Measurement:
    """Run ``row`` on ``server`` once, charging the server's CPU to it."""
    timeout = (options.ramp_time + options.runtime + 120 if row.timed
               else options.timeout + 3600)
    cpu_before, wall_before = peers.group_cpu_seconds(server), time.monotonic()
    report, _ = run_fio(row_args(row, server, options), workdir, timeout)
    wall = time.monotonic() - wall_before
    server_cpu = peers.group_cpu_seconds(server) - cpu_before
    job = report["jobs"][0]
    side = job["read" if "read" in row.rw else "write"]
    seconds = side["runtime"] / 1000 or 1e-9
    value = side["iops"] if row.unit == "IOPS" else side["bw_bytes"] / 1e6
    percentiles = side.get("clat_ns", {}).get("percentile", {})
    return Measurement(
        value=value, seconds=seconds,
        p50_ms=percentiles.get("50.000000", 0) / 1e6,
        p99_ms=percentiles.get("99.000000", 0) / 1e6,
        client_cpu=(job["usr_cpu"] + job["sys_cpu"]) / 100,
        server_cpu=server_cpu / wall)


ROW_ERRORS = (FioError, OSError, subprocess.TimeoutExpired, KeyError, ValueError)


def measure_or_fail(row: Row, server: NbdServer, options, workdir: str) -> Measurement:
    """``measure`` with any failure recorded as a FAILED cell."""
    os.sync()  # the previous run's dirty pages are not this run's cost
    log(f"  {row.name} on {server.name} ...")
    try:
        result = measure(row, server, options, workdir)
    except ROW_ERRORS as err:
        error = f"{type(err).__name__}: {err}"
        if server.process.poll() is not None:
            error += (f"; {server.name} exited with code {server.process.returncode},"
                      f" log tail:\n{peers.log_tail(server.log_path)}")
        result = Measurement(value=None, error=error)
    log(f"    {format_value(result)} {row.unit}" + (f"  {result.error}" if result.error else ""))
    return result


def rotated(servers: list, turn: int) -> list:
    """``servers`` starting at position ``turn`` (so no server always goes first)."""
    turn %= max(len(servers), 1)
    return servers[turn:] + servers[:turn]


def run_rows(servers: list[NbdServer], options, workdir: str) -> dict:
    """Fill every server, check for holes, then every row ``--repeat`` times.
    Returns {row name: {server name: [Measurement, ...]}}."""
    results: dict[str, dict[str, list[Measurement]]] = {FILL.name: {}}
    rows, multi = selected(options, ROWS), selected(options, MULTI_ROWS)
    results.update({row.name: {} for row in [*rows, *multi]})
    turn = 0
    for server in rotated(servers, turn):
        results[FILL.name][server.name] = [measure_or_fail(FILL, server, options, workdir)]
    turn += 1
    for server in servers:
        holes = hole_bytes(server, options.size)
        server.extra["holes_after_fill"] = holes
        if holes:
            log(f"  WARNING: {server.name} still reports {holes} hole bytes in the region")
    qemu = next((s for s in servers if s.name == BASELINE), None)
    for round_no in range(options.repeat):
        for row in [*rows, *multi]:
            log(f"[{round_no + 1}/{options.repeat}] {row.name}")
            for server in rotated(servers, turn):
                results[row.name].setdefault(server.name, []).append(
                    measure_or_fail(row, server, options, workdir))
            turn += 1
        if qemu is not None and multi:
            run_variants(qemu, results, multi, options, workdir)
    os.sync()
    return results


def run_variants(qemu: NbdServer, results: dict, multi: list[Row], options,
                 workdir: str) -> None:
    """The multi-connection rows on qemu-nbd's other configurations, one at a
    time on the default server's filled file (which stays idle meanwhile)."""
    for variant in nbd_peers.QEMU_VARIANTS:
        try:
            with nbd_peers.qemu_nbd_variant(qemu, variant, timeout=options.timeout) as server:
                qemu.extra.setdefault("variants", {})[server.name] = server.command
                for row in multi:
                    results[row.name].setdefault(server.name, []).append(
                        measure_or_fail(row, server, options, workdir))
        except (ServerError, OSError, subprocess.SubprocessError) as err:
            log(f"  qemu-nbd {variant} did not start: {err}")


# -- servers ---------------------------------------------------------------------

def start_servers(options, stack: contextlib.ExitStack, base_dir: str
                  ) -> tuple[list[NbdServer], dict[str, str]]:
    """Start the selected servers (each stopped and removed when ``stack``
    closes); a server that cannot start is reported, the others still run.
    Returns (running servers, {server name: why it is missing})."""
    servers, failures = [], {}
    for name in options.only:
        log(f"starting {name} ...")
        starter = nbd_peers.STARTERS[name]
        try:
            server = stack.enter_context(starter(
                timeout=options.timeout, base_dir=base_dir, keep=options.keep,
                extra_args=options.basalt_args))
        except (ServerError, OSError, subprocess.SubprocessError) as err:
            failures[name] = f"did not start: {err}"
            log(f"  ERROR: {name} {failures[name]}")
            continue
        log(f"  {server.version} at {server.uri}")
        servers.append(server)
    return servers, failures


def verify_all(servers: list[NbdServer], options, workdir: str,
               failures: dict[str, str]) -> list[NbdServer]:
    """Verify each server once; return the ones that returned the right data."""
    good = []
    for server in servers:
        log(f"verifying {server.name} (crc32c write + read back) ...")
        try:
            verify_server(server, options, workdir)
        except WrongData as err:
            failures[server.name] = f"WRONG DATA: {err}"
            log("!" * 72 + f"\n!! {failures[server.name]}\n" + "!" * 72)
            continue
        except ROW_ERRORS as err:
            failures[server.name] = f"verify pass failed: {type(err).__name__}: {err}"
            log(f"  ERROR: {failures[server.name]}")
            continue
        good.append(server)
    return good


# -- reporting ---------------------------------------------------------------------

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def format_value(m: Measurement | None) -> str:
    if m is None:
        return "-"
    return "FAILED" if m.value is None else f"{m.value:,.0f}"


def median(measurements: list[Measurement]) -> Measurement:
    """The median measurement (the lower middle one for an even count); a
    failure if any round failed."""
    failed = [m for m in measurements if m.value is None]
    if failed:
        return failed[0]
    ordered = sorted(measurements, key=lambda m: m.value)
    return ordered[(len(ordered) - 1) // 2]


def summarize(results: dict, servers: list[NbdServer], failures: dict[str, str],
              options) -> dict:
    """Machine-readable results: per row the median per server and the ratio."""
    rows = []
    for row in [FILL, *selected(options, ROWS), *selected(options, MULTI_ROWS)]:
        per_server = {name: median(ms) for name, ms in results.get(row.name, {}).items()}
        for name, why in failures.items():
            per_server[name] = Measurement(value=None, error=why)
        baseline = BASELINE
        if row in MULTI_ROWS:  # qemu-nbd's best configuration
            configs = [n for n, m in per_server.items()
                       if n.startswith(BASELINE) and m.value is not None]
            baseline = max(configs, key=lambda n: per_server[n].value, default=BASELINE)
        basalt, base = per_server.get("basalt"), per_server.get(baseline)
        ratio = basalt.value / base.value if (basalt and base and basalt.value
                                              and base.value) else None
        rows.append({
            "row": row.name, "unit": row.unit, "target_ratio": row.target,
            "ratio": ratio, "baseline": baseline,
            "servers": {name: asdict(m) for name, m in per_server.items()},
            "rounds": {name: [m.value for m in ms]
                       for name, ms in results.get(row.name, {}).items()},
        })
    return {
        "rows": rows,
        "servers": {s.name: {"version": s.version, "uri": s.uri, "command": s.command,
                             "settings": s.settings, **s.extra} for s in servers},
        "failures": failures,
        "settings": {"size": options.size, "runtime": options.runtime,
                     "ramp_time": options.ramp_time, "iodepth": options.iodepth,
                     "repeat": options.repeat, "flush_every": options.flush_every,
                     "fio": nbd_peers.first_line(["fio", "--version"]),
                     "filesystem": options.filesystem},
        "machine": {**options.machine, "loadavg_at_end": os.getloadavg()},
    }


def print_table(summary: dict) -> None:
    """The human report: the machine, then row | basalt | qemu-nbd | nbdkit |
    basalt/qemu-nbd | target (on multi-connection rows the qemu-nbd cell is its
    best configuration, each one listed below the table)."""
    print(machine_line(summary["machine"]))
    print()
    header = (f"{'row':<22}" + "".join(f"{name:>11}" for name in SERVERS)
              + f"{'basalt/' + BASELINE:>17}  target")
    print(header)
    print("-" * len(header))
    for row in summary["rows"]:
        shown = {**row["servers"], BASELINE: row["servers"].get(row["baseline"])}
        cells = [format_value(Measurement(**shown[name]))
                 if shown.get(name) else "-" for name in SERVERS]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
        target = "(reference)"
        if row["target_ratio"] is not None:
            target = f">= {row['target_ratio']:g}x"
            if row["ratio"] is not None:
                target += " met" if row["ratio"] >= row["target_ratio"] else " MISSED"
        print(f"{row['row'] + ' ' + row['unit']:<22}" + "".join(f"{c:>11}" for c in cells)
              + f"{ratio:>17}  {target}")
    print()
    for row in summary["rows"]:
        configs = {n: m for n, m in row["servers"].items() if n.startswith(BASELINE + " ")}
        if configs:
            configs = {BASELINE: row["servers"].get(BASELINE), **configs}
            print(f"{row['row']}: qemu-nbd configurations (best: {row['baseline']}): "
                  + ", ".join(f"{n.removeprefix(BASELINE).strip() or 'default'}"
                              f" {format_value(Measurement(**m) if m else None)}"
                              for n, m in configs.items()))
    print()
    print("p50 / p99 completion latency ms; CPU in cores over the run (fio | server):")
    for row in summary["rows"]:
        for name, m in row["servers"].items():
            if m["value"] is None:
                if name not in summary["failures"]:
                    print(f"  {row['row']:<18} {name:<9} FAILED: {m['error']}")
                continue
            bound = "  <- client-bound?" if m["client_cpu"] > 0.9 else ""
            print(f"  {row['row']:<18} {name:<9} {m['p50_ms']:8.3f} / {m['p99_ms']:8.3f}"
                  f"   cpu {m['client_cpu']:.2f} | {m['server_cpu']:.2f}{bound}")
    print()
    for name, why in summary["failures"].items():
        print(f"{name}: FAILED, {why}")
    for name, info in summary["servers"].items():
        holes = info.get("holes_after_fill")
        hole_note = ("" if holes is None else
                     f"; holes left in the region after the fill: {holes} bytes")
        print(f"{name}: {info['version']}; {info['settings']}{hole_note}")
        print(f"  $ {' '.join(info['command'])}")
        for variant, command in info.get("variants", {}).items():
            print(f"  {variant}: $ {' '.join(command)}")
    s, machine = summary["settings"], summary["machine"]
    print(f"fio: {s['fio']}, ioengine=nbd, iodepth {s['iodepth']}, region {s['size']} bytes,"
          f" {s['ramp_time']:g} s ramp + {s['runtime']:g} s per timed row, {s['repeat']}"
          f" round(s) (median), "
          + (f"NBD FLUSH every {s['flush_every']} writes" if s["flush_every"] else "no NBD FLUSH")
          + ";"
          f" data on {s['filesystem']}")
    print(f"machine: {machine['cpus']} CPUs, load average at end "
          f"{', '.join(f'{x:.2f}' for x in machine['loadavg_at_end'])}; every server"
          f" measured passed a crc32c write/read-back check first")


# -- command line ---------------------------------------------------------------------

def parse_size(text: str) -> int:
    """'2G', '512M', '1048576' -> bytes (binary units)."""
    match = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[match.group(2).upper()]
    return int(match.group(1)) << shift


def parse_servers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SERVERS)}")
    return [name for name in SERVERS if name in names]


def parse_rows(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = [row.name for row in [*ROWS, *MULTI_ROWS]]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(known)}")
    return names


def selected(options: argparse.Namespace, rows: list[Row]) -> list[Row]:
    """The rows of ``rows`` that --rows names (all without it)."""
    return [row for row in rows if options.rows is None or row.name in options.rows]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=parse_servers, default=list(SERVERS),
                        help="comma-separated servers to run, e.g. qemu-nbd,nbdkit")
    parser.add_argument("--size", type=parse_size, default=2 << 30,
                        help="region the rows use, from offset 0 (default 2G)")
    parser.add_argument("--runtime", type=float, default=15.0,
                        help="measured seconds per timed row (default 15)")
    parser.add_argument("--ramp-time", type=float, default=3.0,
                        help="unmeasured seconds before each timed row (default 3)")
    parser.add_argument("--iodepth", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the timed rows; the median is reported (default 1)")
    parser.add_argument("--flush-every", type=int, default=0, metavar="N",
                        help="write rows send an NBD FLUSH every N writes (fio --fsync=N;"
                             " default 0: never)")
    parser.add_argument("--basalt-args", default="",
                        help='extra arguments for "basalt serve", e.g. "--no-fsync"')
    parser.add_argument("--dir", help="parent of the temp data dirs (default $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a server to become ready (default 60)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--rows", type=parse_rows, default=None,
                        help='comma-separated timed rows to run (default all), e.g.'
                             ' "4k rand write,4k rand read"')
    parser.add_argument("--encrypted", action="store_true",
                        help="Basalt only: an encrypted volume beside a plain one, 4k rows")
    options = parser.parse_args(argv)
    if not 0 < options.size <= EXPORT_SIZE - VERIFY_SPAN:
        parser.error(f"--size must be at most {(EXPORT_SIZE - VERIFY_SPAN) >> 20} MiB")
    return options


def filesystem_of(path: str) -> str:
    """File system type of ``path`` (ext4, tmpfs, ...), for the report."""
    result = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", path],
                            capture_output=True, text=True)
    return f"{result.stdout.strip() or 'unknown'} ({path})"


def machine_figures(path: str) -> dict:
    """Cores, CPU model, memory, and the disk under ``path``, for the report."""
    def first(pattern: str, text: str) -> str:
        match = re.search(pattern, text, re.MULTILINE)
        return match.group(1).strip() if match else "unknown"

    def read(name: str) -> str:
        try:
            return Path(name).read_text()
        except OSError:
            return ""

    found = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", path],
                           capture_output=True, text=True).stdout.split()
    source, fstype = (found + ["unknown", "unknown"])[:2]
    block = re.sub(r"p?\d+$", "", os.path.basename(source)) if source.startswith("/dev/") else ""
    rotational = read(f"/sys/block/{block}/queue/rotational").strip()
    model = read(f"/sys/block/{block}/device/model").strip()
    kind = {"0": "non-rotational", "1": "rotational"}.get(rotational, "unknown kind")
    memory_kib = first(r"^MemTotal:\s*(\d+)", read("/proc/meminfo"))
    return {"cpus": os.cpu_count(), "cpu_model": first(r"^model name\s*:(.*)$",
                                                       read("/proc/cpuinfo")),
            "memory_gib": round(int(memory_kib) / 2**20, 1) if memory_kib.isdigit() else None,
            "disk": f"{source} ({model or 'no model'}, {kind}), {fstype}"}


def machine_line(machine: dict) -> str:
    return (f"machine: {machine['cpus']} cores ({machine['cpu_model']}),"
            f" {machine['memory_gib']} GiB memory; data dirs on {machine['disk']}")


def bench(options: argparse.Namespace, stack: contextlib.ExitStack) -> dict:
    """Start, verify, measure; return the summary. Servers stop when ``stack`` closes."""
    fio_binary()  # fail before starting anything
    nbd_peers.require_tool("nbdinfo", "libnbd-bin")
    workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nbdbench-",
                                                              dir=options.dir))
    if options.keep:  # kept dirs must outlive the workdir
        data_parent = tempfile.mkdtemp(prefix="nbdbench-servers-", dir=options.dir)
    else:
        data_parent = os.path.join(workdir, "servers")
        os.mkdir(data_parent)
    options.filesystem = filesystem_of(data_parent)
    options.machine = machine_figures(data_parent)
    log(machine_line(options.machine))
    servers, failures = start_servers(options, stack, data_parent)
    servers = verify_all(servers, options, workdir, failures)
    results = run_rows(servers, options, workdir) if servers else {}
    log("stopping servers ...")
    return summarize(results, servers, failures, options)


# -- --encrypted: an encrypted volume beside a plain one on one Basalt ---------------

ENCRYPTED_ROWS = [Row("4k rand write", "randwrite", "4k", "IOPS", 0.8),
                  Row("4k rand read", "randread", "4k", "IOPS", 0.8)]
ENCRYPTED_EXPORT = "bench-encrypted"


def encrypted_twin(server: NbdServer, timeout: float) -> NbdServer:
    """An encrypted 4 GiB volume on the same Basalt, as a second server entry."""
    command = [peers.find_executable("basalt", "BASALT_BIN"), "--endpoint",
               server.extra["endpoint"], "volume", "create", ENCRYPTED_EXPORT, "--size",
               nbd_peers.EXPORT_SIZE_ARG, "--encrypted"]
    env = dict(os.environ, BASALT_ACCESS_KEY=nbd_peers.ACCESS_KEY,
               BASALT_SECRET_KEY=nbd_peers.SECRET_KEY)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise ServerError(f"encrypted volume not created: {result.stderr.strip()}")
    uri = server.uri.rsplit("/", 1)[0] + "/" + ENCRYPTED_EXPORT
    return replace(server, name="basalt-encrypted", uri=uri,
                   settings=server.settings + f"; encrypted volume {ENCRYPTED_EXPORT}")


def bench_encrypted(options: argparse.Namespace, stack: contextlib.ExitStack) -> dict:
    """Fill both volumes, then the 4k rows ``--repeat`` times; the medians and ratios."""
    fio_binary()
    workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nbdbench-",
                                                              dir=options.dir))
    options.machine = machine_figures(workdir)
    log(machine_line(options.machine))
    plain = stack.enter_context(nbd_peers.basalt_server(
        timeout=options.timeout, base_dir=workdir, keep=options.keep,
        extra_args=options.basalt_args))
    servers = [plain, encrypted_twin(plain, options.timeout)]
    results: dict[str, dict[str, list[Measurement]]] = {}
    for server in servers:
        results.setdefault(FILL.name, {})[server.name] = [
            measure_or_fail(FILL, server, options, workdir)]
    turn = 0
    for round_no in range(options.repeat):
        for row in ENCRYPTED_ROWS:
            log(f"[{round_no + 1}/{options.repeat}] {row.name}")
            for server in rotated(servers, turn):
                results.setdefault(row.name, {}).setdefault(server.name, []).append(
                    measure_or_fail(row, server, options, workdir))
            turn += 1
    rows = []
    for row in [FILL, *ENCRYPTED_ROWS]:
        cells = {name: median(ms) for name, ms in results[row.name].items()}
        a, b = cells.get("basalt-encrypted"), cells.get("basalt")
        pairs = [e.value / p.value for e, p in zip(results[row.name].get("basalt-encrypted", []),
                                                   results[row.name].get("basalt", []))
                 if e.value and p.value]
        rows.append({"row": row.name, "unit": row.unit, "target_ratio": row.target,
                     "ratio": a.value / b.value if a and b and a.value and b.value else None,
                     "paired_ratio": sorted(pairs)[(len(pairs) - 1) // 2] if pairs else None,
                     "servers": {n: asdict(m) for n, m in cells.items()},
                     "rounds": {n: [m.value for m in ms] for n, ms in results[row.name].items()}})
    return {"rows": rows, "machine": {**options.machine, "loadavg_at_end": os.getloadavg()},
            "settings": {"size": options.size, "runtime": options.runtime,
                         "repeat": options.repeat, "iodepth": options.iodepth}}


def print_encrypted(summary: dict) -> None:
    print(machine_line(summary["machine"]))
    print(f"{'row':<18}{'plain':>12}{'encrypted':>12}{'enc/plain':>11}{'paired':>8}"
          f"{'target':>8}")
    for row in summary["rows"]:
        cells = row["servers"]
        values = [cells.get(n, {}).get("value") for n in ("basalt", "basalt-encrypted")]
        text = [f"{v:,.0f}" if v is not None else "FAILED" for v in values]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        paired = f"{row['paired_ratio']:.2f}x" if row.get("paired_ratio") else "-"
        target = f"{row['target_ratio']:.1f}x" if row["target_ratio"] else ""
        print(f"{row['row']:<18}{text[0]:>12}{text[1]:>12}{ratio:>11}{paired:>8}{target:>8}"
              f"  {row['unit']}, rounds {row['rounds']}")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    run, show = (bench_encrypted, print_encrypted) if options.encrypted else (bench, print_table)
    # Ctrl-C and SIGTERM both raise KeyboardInterrupt, which unwinds the
    # ExitStack: fio killed by subprocess.run, servers stopped, dirs removed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with contextlib.ExitStack() as stack:
            summary = run(options, stack)
    except ServerError as err:
        log(f"error: {err}")
        return EXIT_NO_SERVER
    except KeyboardInterrupt:
        log("interrupted; servers stopped, data removed")
        return 130
    if options.json:
        print(json.dumps(summary, indent=2))
    else:
        show(summary)
    if any(why.startswith("WRONG DATA") for why in summary.get("failures", {}).values()):
        return EXIT_WRONG_DATA
    if "servers" in summary and not summary["servers"]:  # (the --encrypted run has one)
        return EXIT_NO_SERVER
    failed = any(m["value"] is None for row in summary["rows"] for m in row["servers"].values())
    return EXIT_ROW_FAILED if failed else 0




if __name__ == "__main__":
    sys.exit(main())
