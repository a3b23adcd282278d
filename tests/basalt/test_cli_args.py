"""The CLI's argument parsing, output helpers and error mapping (no server)."""

from __future__ import annotations

import io
import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from basalt.admin_client import AdminError
from basalt.cli import build_parser, main
from basalt.cli.common import CLIError, resolve_defaults, table, user_error
from basalt.config import ConfigError
from basalt.progress import Progress, human_bytes, progress_text


def parse(*argv: str):
    return resolve_defaults(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ("--data-dir", "D", "--endpoint", "http://e:1", "--json", "volume", "list"),
    ("volume", "list", "--data-dir", "D", "--endpoint", "http://e:1", "--json"),
    ("volume", "--data-dir", "D", "list", "--endpoint", "http://e:1", "--json"),
    ("--json", "volume", "--endpoint", "http://e:1", "list", "--data-dir", "D"),
])
def test_global_options_in_any_position(argv):
    args = parse(*argv)
    assert (args.data_dir, args.endpoint, args.json) == ("D", "http://e:1", True)
    assert (args.command, args.action) == ("volume", "list")


def test_global_options_at_the_deepest_level():
    args = parse("volume", "backups", "prune", "s3://b/p", "--keep", "2", "--json",
                 "--endpoint", "http://x:2")
    assert args.json and args.endpoint == "http://x:2" and args.keep == 2
    assert args.source == "s3://b/p" and args.backups_action == "prune"


def test_serve_takes_data_dir_after_the_command():
    args = parse("serve", "--data-dir", "D", "--s3-address", "127.0.0.1:1")
    assert args.data_dir == "D" and args.s3_address == "127.0.0.1:1"
    assert parse("--data-dir", "D", "serve").data_dir == "D"


def test_serve_lifecycle_day_reaches_the_server_options(fake_serve):
    import basalt.cli.serve as serve_cli
    seen = fake_serve
    assert parse("serve").lifecycle_day_seconds == 86400
    serve_cli.cmd_serve(parse("serve", "--lifecycle-day-seconds", "2", "--data-dir", "D"))
    serve_cli.cmd_serve(parse("serve"))
    assert [o.lifecycle_day_ns for o in seen] == [2 * 10**9, 86400 * 10**9]
    with pytest.raises(ConfigError):
        serve_cli.cmd_serve(parse("serve", "--lifecycle-day-seconds", "0"))


def test_defaults_from_the_environment(monkeypatch):
    monkeypatch.setenv("BASALT_DATA_DIR", "/env/data")
    monkeypatch.setenv("BASALT_ENDPOINT", "http://env:9")
    args = parse("heal")
    assert (args.data_dir, args.endpoint, args.json) == ("/env/data", "http://env:9", False)
    monkeypatch.delenv("BASALT_DATA_DIR")
    monkeypatch.delenv("BASALT_ENDPOINT")
    args = parse("heal")
    assert args.data_dir == "basalt-data" and args.endpoint == "http://127.0.0.1:9000"


def test_the_option_after_the_command_wins():
    assert parse("--data-dir", "A", "heal", "--data-dir", "B").data_dir == "B"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == "basalt 0.1.0"


def test_usage_error_with_json_is_a_json_document(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["volume", "crate", "x", "--json"])
    assert exit_.value.code == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "UsageError" and "crate" in out["message"]


@pytest.mark.parametrize("as_json", [False, True])
def test_bad_size_is_one_line_before_any_connection(capsys, as_json):
    argv = ["--endpoint", "http://127.0.0.1:1", "volume", "create", "v", "--size", "12Q"]
    code = main(argv + (["--json"] if as_json else []))
    out, err = capsys.readouterr()
    assert code == 2
    if as_json:
        assert json.loads(out) == {"error": "InvalidArgument",
                                   "message": "not a size: '12Q' (e.g. 512M, 10G, 1T)"}
        assert err == ""
    else:
        assert out == "" and err == "basalt: not a size: '12Q' (e.g. 512M, 10G, 1T)\n"


def test_prune_needs_keep_of_at_least_one(capsys):
    assert main(["volume", "backups", "prune", "s3://b/p", "--keep", "0"]) == 2
    assert capsys.readouterr().err == "basalt: --keep must be at least 1\n"


def test_error_mapping():
    e = user_error(AdminError("NoSuchVolume", "volume x does not exist", 404))
    assert (e.code, e.message) == ("NoSuchVolume", "volume x does not exist (NoSuchVolume)")
    e = user_error(AdminError("EndpointUnreachable", "cannot reach Basalt at http://h:1: refused"))
    assert e.message == "cannot reach Basalt at http://h:1: refused"
    assert "basalt serve" in e.hint and "--endpoint" in e.hint
    assert user_error(AdminError("InvalidAccessKeyId", "unknown key")).hint.startswith(
        "check BASALT_ACCESS_KEY")
    assert user_error(AdminError("Whatever", "x")).hint is None
    e = user_error(ConfigError("not a size"))
    assert (e.code, e.message) == ("InvalidArgument", "not a size")
    e = user_error(FileNotFoundError(2, "No such file or directory", "/nope"))
    assert (e.code, e.message) == ("ENOENT", "/nope: No such file or directory")
    assert user_error(KeyboardInterrupt()).exit_code == 130
    missing = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    from basalt.cli.common import s3_error
    e = s3_error(missing, "s3://bucket/missing")
    assert (e.code, e.message) == ("NoSuchKey", "s3://bucket/missing: no such object (NoSuchKey)")
    e = user_error(EndpointConnectionError(endpoint_url="http://h:2"))
    assert e.code == "EndpointUnreachable" and "http://h:2" in e.message
    assert user_error(TypeError("a bug")) is None  # bugs keep their traceback
    assert isinstance(user_error(CLIError("X", "y")), CLIError)


def test_table_has_a_header_and_aligned_columns():
    rows = [{"name": "a", "size": 1 << 30}, {"name": "longer-name", "size": 512}]
    text = table(rows, [("NAME", lambda r: r["name"], False),
                        ("SIZE", lambda r: human_bytes(r["size"]), True),
                        ("ORIGIN", lambda r: r.get("origin"), False)])
    assert text.splitlines() == ["NAME            SIZE  ORIGIN",
                                 "a            1.0 GiB  -",
                                 "longer-name    512 B  -"]
    assert table([], [("NAME", lambda r: r, False)]) == "NAME"


def test_human_bytes_and_progress_text():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536 << 20, 100000 << 40)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 GiB", "97.7 PiB"]
    assert progress_text("importing debian12", 120 << 20, 2 << 30) == \
        "importing debian12: 120.0 MiB / 2.0 GiB (6%)"
    assert progress_text("importing x", 5 << 20) == "importing x: 5.0 MiB"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def not_in_ci(monkeypatch):
    """These tests play a terminal; the suite itself runs with CI=true."""
    monkeypatch.delenv("CI", raising=False)


def test_progress_is_off_under_ci_even_on_a_terminal(monkeypatch):
    monkeypatch.setenv("CI", "true")
    stream = FakeTTY()
    p = Progress(stream, interval=0)
    p.bytes("importing x", 1, 2)
    p.done("imported x")
    assert stream.getvalue() == "imported x\n"


def test_progress_off_a_terminal_prints_only_the_final_line():
    stream = io.StringIO()
    p = Progress(stream, interval=0)
    p.update("step 1")
    p.bytes("importing x", 1, 2)
    p.done("imported x")
    assert stream.getvalue() == "imported x\n"
    quiet = io.StringIO()
    Progress(quiet).done()
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_redraws_one_line():
    stream = FakeTTY()
    p = Progress(stream, interval=0)
    p.update("step 1")
    p.bytes("importing x", 1 << 20, 4 << 20)
    p.done()
    assert stream.getvalue() == ("\r\x1b[2Kstep 1\r\x1b[2Kimporting x [#####---------------] "
                                 "1.0 MiB / 4.0 MiB (25%)\n")


def test_progress_counter_is_a_boto3_callback():
    stream = FakeTTY()
    count = Progress(stream, interval=0).counter("importing debian12", 2 << 30)
    count(100 << 20)
    count(20 << 20)
    assert count.done == 120 << 20
    assert stream.getvalue().endswith("importing debian12 [#-------------------] "
                                      "120.0 MiB / 2.0 GiB (6%)")


def test_progress_shows_rate_and_time_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("basalt.progress.time.monotonic", lambda: clock[0])
    stream = FakeTTY()
    p = Progress(stream, interval=0)
    p.bytes("restoring v", 0, 1000 << 20)
    clock[0] += 2
    p.bytes("restoring v", 200 << 20, 1000 << 20)
    assert stream.getvalue().endswith(
        "restoring v [####----------------] 200.0 MiB / 1000.0 MiB (20%) 100.0 MiB/s ETA 0:00:08")
    clock[0] += 1
    p.bytes("uploading", 0)
    clock[0] += 1
    p.bytes("uploading", 3 << 20)
    assert stream.getvalue().endswith("uploading: 3.0 MiB 3.0 MiB/s")
    assert progress_text("x", 10, 10, rate=5.0) == "x: 10 B / 10 B (100%) 5 B/s"  # no ETA at the end


def test_percent_reaches_100_only_at_the_end():
    assert progress_text("x", 999, 1000).endswith("(99%)")
    assert progress_text("x", 1000, 1000).endswith("(100%)")


def test_s3_errors_name_the_object_and_let_bugs_through():
    from basalt.cli.common import s3_errors_name
    with pytest.raises(CLIError) as err, s3_errors_name("s3://b/prefix"):
        raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "x"}}, "ListObjectsV2")
    assert err.value.message == "s3://b/prefix: no such bucket (NoSuchBucket)"
    with pytest.raises(KeyError), s3_errors_name("s3://b/prefix"):
        raise KeyError("a bug")


def test_a_broken_connection_is_one_line():
    import http.client
    e = user_error(http.client.IncompleteRead(b"", 10))
    assert e.code == "ConnectionBroken" and "broke" in e.message
