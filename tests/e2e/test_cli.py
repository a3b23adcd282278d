"""The `basalt` executable as users and scripts run it, against a real server:
global options before or after the command, --version, one JSON document per
command with --json (errors included), one clear line for every bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from .conftest import ACCESS, BASALT, SECRET, Server, free_port, stop_server, wait_healthy
from .nbd_e2e_helpers import one_error_line as one_line
from .test_volume_backup import qemu_io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(server: Server | None, *args: str, endpoint_env: bool = False,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the executable with exactly `args` (no --endpoint from the environment
    unless `endpoint_env`: the tests place it themselves)."""
    env = dict(server.env) if server else dict(os.environ, BASALT_ACCESS_KEY=ACCESS,
                                                 BASALT_SECRET_KEY=SECRET)
    if not endpoint_env:
        env.pop("BASALT_ENDPOINT", None)
    return subprocess.run([BASALT, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, out.stderr + out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    return out


def one_json(out: subprocess.CompletedProcess):
    """stdout is exactly one JSON document (object or list)."""
    assert "Traceback" not in out.stderr, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict | list), out.stdout
    return doc


def json_error(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode != 0, out.stdout
    doc = one_json(out)
    assert set(doc) - {"hint"} == {"error", "message"} and doc["error"] and doc["message"], doc
    return doc


def positions(server: Server, *command: str) -> list[list[str]]:
    """`command` with the global options before it, after it, and split around it."""
    ep, dd = ["--endpoint", server.endpoint], ["--data-dir", server.data_dir]
    head, tail = list(command[:1]), list(command[1:])
    return [[*ep, *dd, "--json", *command],
            [*command, *ep, *dd, "--json"],
            ["--json", *head, *ep, *tail, *dd]]


def test_version():
    out = ok(cli(None, "--version"))
    assert out.stdout.strip() == "basalt 0.1.0"


def _serve(argv: list[str], tmp: str, port: int, nbd: int) -> Server:
    log_path = os.path.join(tmp, "serve.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=dict(os.environ, BASALT_ACCESS_KEY=ACCESS,
                                               BASALT_SECRET_KEY=SECRET),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp)
    return Server(proc, os.path.join(tmp, "d"), f"http://127.0.0.1:{port}", nbd, None, log_path)


def _serve_and_check(argv_for, tmp_path) -> None:
    tmp = str(tmp_path)
    port, nbd = free_port(), free_port()
    data_dir = os.path.join(tmp, "d")
    server = _serve(argv_for(data_dir, port, nbd), tmp, port, nbd)
    try:
        wait_healthy(server)
        # the data dir named after the command is the one used (not ./basalt-data)
        assert os.path.isdir(os.path.join(data_dir, "disks"))
        assert not os.path.exists(os.path.join(tmp, "basalt-data"))
        listed = one_json(ok(cli(server, "volume", "list", "--endpoint", server.endpoint,
                                    "--json")))
        assert listed == []
    finally:
        stop_server(server)


def test_serve_with_options_after_the_command(tmp_path):
    _serve_and_check(lambda d, port, nbd: [
        BASALT, "serve", "--data-dir", d, "--s3-address", f"127.0.0.1:{port}",
        "--nbd-address", f"127.0.0.1:{nbd}", "--workers", "1"], tmp_path)


def test_serve_with_options_before_the_command(tmp_path):
    _serve_and_check(lambda d, port, nbd: [
        BASALT, "--data-dir", d, "serve", "--s3-address", f"127.0.0.1:{port}",
        "--nbd-address", f"127.0.0.1:{nbd}", "--workers", "1"], tmp_path)


def test_scripts_serve_passes_the_data_dir(tmp_path):
    """scripts/serve as it is, in a copy of the tree whose bootstrap has nothing to
    install and whose .venv/bin/basalt is this one."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / ".venv" / "bin").mkdir(parents=True)
    shutil.copy2(os.path.join(ROOT, "scripts", "serve"), tree / "scripts" / "serve")
    (tree / "scripts" / "bootstrap").write_text("#!/bin/sh\nexit 0\n")
    (tree / "scripts" / "bootstrap").chmod(0o755)
    os.symlink(BASALT, tree / ".venv" / "bin" / "basalt")
    _serve_and_check(lambda d, port, nbd: [
        str(tree / "scripts" / "serve"), "--data-dir", d,
        "--s3-address", f"127.0.0.1:{port}", "--nbd-address", f"127.0.0.1:{nbd}",
        "--workers", "1"], tmp_path)


def test_volume_commands_with_options_in_every_position(basalt_http):
    srv = basalt_http
    for i, argv in enumerate(positions(srv, "volume", "create", f"pos{0}", "--size", "8M")):
        argv = [a.replace("pos0", f"pos{i}") for a in argv]
        created = one_json(ok(cli(srv, *argv)))
        assert created["name"] == f"pos{i}" and created["size"] == 8 << 20
    for argv in positions(srv, "volume", "list"):
        names = {v["name"] for v in one_json(ok(cli(srv, *argv)))}
        assert {"pos0", "pos1", "pos2"} <= names
    for i, argv in enumerate(positions(srv, "volume", "info", "pos0")):
        argv = [a.replace("pos0", f"pos{i}") for a in argv]
        assert one_json(ok(cli(srv, *argv)))["size"] == 8 << 20
    for i, argv in enumerate(positions(srv, "volume", "delete", "pos0")):
        argv = [a.replace("pos0", f"pos{i}") for a in argv]
        assert one_json(ok(cli(srv, *argv))) == {"name": f"pos{i}", "deleted": True}
    names = {v["name"] for v in one_json(ok(cli(srv, "--json", "volume", "list",
                                                   "--endpoint", srv.endpoint)))}
    assert not names & {"pos0", "pos1", "pos2"}


def test_volume_create_prints_its_nbd_uris(basalt_http):
    srv = basalt_http
    out = ok(cli(srv, "volume", "create", "uri-vol", "--size", "1M", endpoint_env=True))
    lines = out.stdout.splitlines()
    assert lines[0].startswith("created volume uri-vol") and "1.0 MiB" in lines[0], lines
    assert f"nbd://127.0.0.1:{srv.nbd_port}/uri-vol" in out.stdout
    socket = os.path.join(srv.data_dir, "run", "nbd.sock")
    assert f"nbd+unix:///uri-vol?socket={socket}" in out.stdout
    info = one_json(ok(cli(srv, "volume", "create", "uri-vol2", "--size", "1M", "--json",
                              endpoint_env=True)))
    assert info["nbd_uri"] == f"nbd://127.0.0.1:{srv.nbd_port}/uri-vol2"
    assert info["nbd_socket"] == socket
    qemu_io(srv, "uri-vol2", "write -P 0x5 0 4k", "read -P 0x5 0 4k")


def test_volume_list_is_a_table_with_human_sizes(basalt_http):
    srv = basalt_http
    ok(cli(srv, "volume", "create", "table-vol", "--size", "1536M", endpoint_env=True))
    lines = ok(cli(srv, "volume", "list", endpoint_env=True)).stdout.splitlines()
    header = lines[0]
    assert header.split() == ["NAME", "SIZE", "ALLOCATED", "CONNECTIONS", "ORIGIN"]
    row = next(line for line in lines if line.startswith("table-vol "))
    assert row.split()[1:3] == ["1.5", "GiB"]
    # aligned: the right-aligned SIZE column ends where its header ends
    end = header.index("SIZE") + len("SIZE")
    assert row[:end].endswith("GiB") and row[end] == " "


def test_over_commit_is_warned_but_allowed(basalt_http):
    srv = basalt_http
    out = ok(cli(srv, "volume", "create", "huge", "--size", "500T", endpoint_env=True))
    warning = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1, out.stderr
    assert re.fullmatch(r"warning: \d+\.\d TiB provisioned on \d+\.\d [KMGT]iB usable "
                        r"\(thin volumes: writes fail when the disks fill\)", warning[0]), warning
    resized = ok(cli(srv, "volume", "resize", "huge", "--size", "600T", "--json",
                        endpoint_env=True))
    assert one_json(resized)["size"] == 600 << 40 and "warning: " in resized.stderr
    ok(cli(srv, "volume", "delete", "huge", endpoint_env=True))
    small = ok(cli(srv, "volume", "create", "small", "--size", "1M", endpoint_env=True))
    assert "warning" not in small.stderr


def test_bad_inputs_get_one_clear_line(basalt_http, tmp_path):
    srv = basalt_http
    line = one_line(cli(srv, "volume", "create", "x", "--size", "12Q", endpoint_env=True))
    assert "not a size" in line
    line = one_line(cli(srv, "volume", "create", "x", "--size", "100000T", endpoint_env=True))
    assert "97.7 PiB" in line and "1.0 PiB" in line and not re.search(r"\d{7,}", line), line
    line = one_line(cli(srv, "image", "import", "/nonexistent", "x", endpoint_env=True))
    assert "/nonexistent" in line
    line = one_line(cli(srv, "image", "import", "s3://nobucket/missing", "x",
                           endpoint_env=True))
    assert line.startswith("basalt: s3://nobucket/missing: no such "), line
    srv.client().create_bucket(Bucket="cli-src")
    line = one_line(cli(srv, "image", "import", "s3://cli-src/missing", "x",
                           endpoint_env=True))
    assert line == "basalt: s3://cli-src/missing: no such object (NoSuchKey)", line
    line = one_line(cli(srv, "volume", "delete", "missing", endpoint_env=True))
    assert "missing" in line and "NoSuchVolume" in line
    port = free_port()  # nobody listens there
    line = one_line(cli(srv, "volume", "list", "--endpoint", f"http://127.0.0.1:{port}"))
    assert line == f"basalt: cannot reach Basalt at http://127.0.0.1:{port}: " \
                   "[Errno 111] Connection refused", line
    out = cli(srv, "volume", "list", "--endpoint", f"http://127.0.0.1:{port}")
    assert out.stderr.splitlines()[1] == "  is `basalt serve` running there? Start it, or " \
        "point at it with --endpoint URL (or BASALT_ENDPOINT)."


def test_errors_with_json_are_json(basalt_http):
    srv = basalt_http
    for argv, code in [
        (("volume", "info", "missing"), "NoSuchVolume"),
        (("volume", "delete", "missing"), "NoSuchVolume"),
        (("volume", "create", "x", "--size", "12Q"), "InvalidArgument"),
        (("volume", "create", "x", "--size", "100000T"), "InvalidSize"),
        (("image", "import", "s3://cli-nobucket/missing", "x"), "NoSuchBucket"),
        (("volume", "crate", "x"), "UsageError"),
    ]:
        for where in (["--json", *argv], [*argv, "--json"]):
            assert json_error(cli(srv, *where, endpoint_env=True))["error"] == code, where
    port = free_port()
    doc = json_error(cli(srv, "--json", "heal", "--endpoint", f"http://127.0.0.1:{port}"))
    assert doc["error"] == "EndpointUnreachable"


def test_heal_with_options_in_every_position(basalt_http):
    for argv in positions(basalt_http, "heal", "--quick"):
        report = one_json(ok(cli(basalt_http, *argv)))
        assert report["done"] is True and report["failed"] == 0


def test_network_and_vm_lists(basalt_http):
    """Networks and VMs may be off on this host: then a clean JSON error, else a list."""
    for command in (("network", "list"), ("vm", "list")):
        for argv in positions(basalt_http, *command):
            out = cli(basalt_http, *argv)
            if out.returncode == 0:
                assert isinstance(one_json(out), list)
            else:
                assert json_error(out)["error"].endswith("Unavailable"), out.stdout
        out = cli(basalt_http, *command, endpoint_env=True)
        if out.returncode == 0:
            assert out.stdout.splitlines()[0].split()[:2] == ["NAME", "SUBNET" if
                                                              command[0] == "network" else
                                                              "STATE"]
        else:
            one_line(out)
    doc = json_error(cli(basalt_http, "network", "delete", "no-such-net", "--json",
                            endpoint_env=True))
    assert doc["error"]


def test_image_import_list_and_json(basalt_http, tmp_path):
    srv = basalt_http
    raw = tmp_path / "small.raw"
    raw.write_bytes(os.urandom(1 << 20))
    out = ok(cli(srv, "image", "import", str(raw), "cli-img", endpoint_env=True))
    assert out.stdout.strip() == f"imported {raw} as image cli-img (raw, 1.0 MiB)"
    assert out.stderr == ""  # no progress lines when stderr is not a terminal
    doc = one_json(ok(cli(srv, "--json", "image", "import", str(raw), "cli-img2",
                             "--endpoint", srv.endpoint)))
    assert doc["name"] == "cli-img2" and doc["size"] == 1 << 20 and doc["format"] == "raw"
    images = {i["name"]: i for i in one_json(ok(cli(srv, "image", "list", "--json",
                                                       endpoint_env=True)))}
    assert images["cli-img"]["size"] == 1 << 20
    lines = ok(cli(srv, "image", "list", endpoint_env=True)).stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "FORMAT", "VOLUMES"]
    assert any(line.split() == ["cli-img", "1.0", "MiB", "raw", "-"] for line in lines[1:]), lines
    ok(cli(srv, "volume", "create", "cli-img-vol", "--from-image", "cli-img", endpoint_env=True))
    lines = ok(cli(srv, "image", "list", endpoint_env=True)).stdout.splitlines()
    assert any(line.split() == ["cli-img", "1.0", "MiB", "raw", "cli-img-vol"]
               for line in lines[1:]), lines


def test_image_delete(basalt_http, tmp_path):
    srv = basalt_http
    raw = tmp_path / "del.raw"
    raw.write_bytes(os.urandom(512 * 8))
    ok(cli(srv, "image", "import", str(raw), "cli-del", endpoint_env=True))
    doc = one_json(ok(cli(srv, "image", "delete", "cli-del", "--json", endpoint_env=True)))
    assert doc["name"] == "cli-del"
    names = {i["name"] for i in one_json(ok(cli(srv, "--json", "image", "list",
                                                   endpoint_env=True)))}
    assert "cli-del" not in names


def _two_backups(srv: Server, prefix: str) -> tuple[dict, dict]:
    srv.client().create_bucket(Bucket=prefix)
    ok(cli(srv, "volume", "create", f"{prefix}-src", "--size", "4M", endpoint_env=True))
    qemu_io(srv, f"{prefix}-src", "write -P 0x7 0 1M", "flush")
    first = one_json(ok(cli(srv, "volume", "backup", f"{prefix}-src", "--to",
                            f"s3://{prefix}/p", "--json", endpoint_env=True)))
    qemu_io(srv, f"{prefix}-src", "write -P 0x8 1M 1M", "flush")
    second = one_json(ok(cli(srv, "--json", "volume", "backup", f"{prefix}-src", "--to",
                             f"s3://{prefix}/p", endpoint_env=True)))
    return first, second


def test_restore_with_json(basalt_http):
    srv = basalt_http
    _two_backups(srv, "cli-restore")
    restored = one_json(ok(cli(srv, "volume", "restore", "s3://cli-restore/p", "--to",
                               "cli-restore-copy", "--json", endpoint_env=True)))
    assert isinstance(restored, dict)
    qemu_io(srv, "cli-restore-copy", "read -P 0x7 0 1M", "read -P 0x8 1M 1M")
    doc = json_error(cli(srv, "volume", "restore", "s3://cli-restore/nothing", "--to", "y",
                         "--json", endpoint_env=True))
    assert "no backups" in doc["message"]


def test_backups_list_and_prune(basalt_http):
    srv = basalt_http
    first, second = _two_backups(srv, "cli-backups")
    listed = one_json(ok(cli(srv, "volume", "backups", "list", "s3://cli-backups/p",
                             "--json", endpoint_env=True)))
    assert [b["id"] for b in listed] == [first["backup"], second["backup"]]
    assert all(b["volume"] == "cli-backups-src" and b["size"] == 4 << 20 for b in listed)
    lines = ok(cli(srv, "volume", "backups", "list", "s3://cli-backups/p",
                   endpoint_env=True)).stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "VOLUME", "SIZE", "STORED"]
    assert [line.split()[0] for line in lines[1:]] == [first["backup"], second["backup"]]
    pruned = ok(cli(srv, "volume", "backups", "prune", "s3://cli-backups/p", "--keep", "1",
                    endpoint_env=True)).stdout.strip()
    assert re.fullmatch(r"pruned 1 backups, kept 1; deleted \d+ packs \(\d+(\.\d)? \w?i?B\)",
                        pruned), pruned
    listed = one_json(ok(cli(srv, "--json", "volume", "backups", "list",
                             "s3://cli-backups/p", endpoint_env=True)))
    assert [b["id"] for b in listed] == [second["backup"]]


def test_progress_is_drawn_on_a_terminal_only(basalt_http, tmp_path):
    """Long work shows a bar, the rate and the time left in a pseudo-terminal;
    under CI=true with stderr not a terminal, nothing but the result."""
    import pty
    srv = basalt_http
    raw = tmp_path / "big.raw"
    with open(raw, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(8 << 20))

    def on_a_terminal(name: str, **env: str) -> str:
        main, sub = pty.openpty()
        environment = {k: v for k, v in srv.env.items() if k != "CI"}
        proc = subprocess.Popen([BASALT, "image", "import", str(raw), name],
                                env={**environment, **env}, stdout=subprocess.PIPE,
                                stderr=sub, text=True)
        os.close(sub)
        drawn = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        proc.wait(120)
        os.close(main)
        assert proc.returncode == 0, drawn
        return drawn.decode(errors="replace")

    text = on_a_terminal("pty-img")
    assert "\r\x1b[2Kimporting pty-img [" in text and "192.0 MiB (" in text, text[-500:]
    assert "/s" in text and "ETA" in text, text[-500:]  # rate and time left once it runs
    assert on_a_terminal("pty-img2", CI="true") == ""  # CI logs: nothing drawn
    plain = cli(srv, "image", "import", str(raw), "pty-img3", endpoint_env=True)
    assert plain.returncode == 0 and plain.stderr == ""
