"""`basalt cluster ...` against a fake admin API (aiohttp on 127.0.0.1 in a thread):
what each command asks the server, and what it prints (tables, lines, one JSON
document with --json, the server's refusal on stderr or as a JSON error)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from aiohttp import web

from basalt.cli import main
from basalt.progress import human_bytes

API = "/_basalt/v1/cluster"
GIB = 1 << 30


def _pool(name: str, k: int, m: int, state: str, nodes: list[str], sets: int = 1) -> dict:
    return {"name": name, "k": k, "m": m, "state": state, "created_ns": 1_700_000_000_000_000_000,
            "sets": [{"index": i, "disks": [{"node": nodes[j % len(nodes)], "disk_id": f"d{i}{j}"}
                                            for j in range(k + m)]} for i in range(sets)]}


STATUS = {
    "nodes": [
        {"name": "alpha", "alive": True, "advertise": "10.0.0.1:7000", "zone": "z1",
         "disks": [{"disk_id": "a1", "path": "/mnt/a1", "size": 2 * GIB},
                   {"disk_id": "a2", "path": "/mnt/a2", "size": 2 * GIB}]},
        {"name": "bravo", "alive": False, "advertise": "10.0.0.2:7000", "zone": None,
         "disks": [{"disk_id": "b1", "path": "/mnt/b1", "size": 3 * GIB // 2}]},
    ],
    "pools": [_pool("main", 4, 2, "active", ["alpha", "bravo", "charlie"], sets=2),
              _pool("old", 2, 1, "draining", ["alpha", "bravo", "charlie"])],
}


class FakeAdmin:
    """Answers `answers[(METHOD, path)]` = (status, JSON document) and records
    every request (method, raw path, JSON body, Authorization header)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, object]] = {}
        self.requests: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.SockSite(self.runner, self.sock).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append({"method": request.method, "path": request.raw_path,
                              "body": json.loads(raw) if raw else None,
                              "auth": request.headers.get("Authorization", "")})
        status, doc = self.answers.get((request.method, request.path),
                                       (404, {"code": "NoSuchRoute", "message": request.path}))
        return web.json_response(doc, status=status)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("BASALT_ACCESS_KEY", "AKTEST")
    monkeypatch.setenv("BASALT_SECRET_KEY", "secret-test-key")
    # Nothing listens here: a command that ignored --endpoint would fail.
    monkeypatch.setenv("BASALT_ENDPOINT", "http://127.0.0.1:1")
    server = FakeAdmin()
    try:
        yield server
    finally:
        server.close()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_is_exactly_the_servers_document(fake, capsys):
    fake.answers[("GET", f"{API}/status")] = (200, STATUS)
    code, out, err = run(capsys, "--endpoint", fake.endpoint, "--json", "cluster", "status")
    assert code == 0, err
    assert json.loads(out) == STATUS          # one document, nothing else on stdout
    assert [(r["method"], r["path"]) for r in fake.requests] == [("GET", f"{API}/status")]
    assert fake.requests[0]["auth"].startswith("AWS4-HMAC-SHA256 Credential=AKTEST/")


def test_status_tables(fake, capsys):
    fake.answers[("GET", f"{API}/status")] = (200, STATUS)
    code, out, err = run(capsys, "cluster", "status", "--endpoint", fake.endpoint)
    assert code == 0, err
    nodes_text, pools_text = out.rstrip("\n").split("\n\n")
    nodes = [line.split() for line in nodes_text.splitlines()]
    assert nodes[0] == ["NAME", "ALIVE", "ADVERTISE", "ZONE", "DISKS", "CAPACITY"]
    assert nodes[1] == ["alpha", "yes", "10.0.0.1:7000", "z1", "2", *human_bytes(4 * GIB).split()]
    assert nodes[2] == ["bravo", "no", "10.0.0.2:7000", "-", "1", "1.5", "GiB"]
    pools = [line.split() for line in pools_text.splitlines()]
    assert pools[0] == ["NAME", "EC", "STATE", "SETS", "DISKS"]
    assert pools[1] == ["main", "4+2", "active", "2", "12"]
    assert pools[2] == ["old", "2+1", "draining", "1", "3"]


def test_status_tables_with_no_pools_keep_their_headers(fake, capsys):
    fake.answers[("GET", f"{API}/status")] = (200, {"nodes": [], "pools": []})
    code, out, err = run(capsys, "cluster", "status", "--endpoint", fake.endpoint)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines() if line] == ["NAME", "NAME"]
    assert "EC" in out and "CAPACITY" in out


def test_pool_create_sends_ec_name_nodes_and_prints_the_pool(fake, capsys):
    pool = _pool("p1", 2, 1, "active", ["n1", "n2", "n3"], sets=2)
    fake.answers[("POST", f"{API}/pools")] = (200, pool)
    code, out, err = run(capsys, "cluster", "pool", "create", "--ec", "2+1", "--name", "p1",
                         "n1", "n2", "n3", "--endpoint", fake.endpoint)
    assert code == 0, err
    assert [(r["method"], r["path"], r["body"]) for r in fake.requests] == [
        ("POST", f"{API}/pools", {"ec": "2+1", "name": "p1", "nodes": ["n1", "n2", "n3"]})]
    assert len(out.splitlines()) == 1
    assert "p1" in out and "2+1" in out and "2 sets × 3 disks" in out


def test_pool_create_without_a_name_and_with_json(fake, capsys):
    pool = _pool("pool-0", 4, 2, "active", ["a", "b", "c"])
    fake.answers[("POST", f"{API}/pools")] = (200, pool)
    # global options between the node names; --ec after them
    code, out, err = run(capsys, "--endpoint", fake.endpoint, "cluster", "pool", "create",
                         "a", "b", "--json", "c", "--ec", " 4 + 2 ")
    assert code == 0, err
    assert fake.requests[0]["body"] == {"ec": "4+2", "name": None, "nodes": ["a", "b", "c"]}
    assert json.loads(out) == pool


def test_a_refused_layout_exits_non_zero_with_the_reason(fake, capsys):
    reason = "node n1 would hold 3 shards of set 0, more than M=1"
    fake.answers[("POST", f"{API}/pools")] = (400, {"code": "InvalidArgument", "message": reason})
    argv = ["cluster", "pool", "create", "--ec", "2+1", "n1", "n2", "--endpoint", fake.endpoint]
    code, out, err = run(capsys, *argv)
    assert code != 0
    assert out == ""
    assert err.startswith("basalt: ") and reason in err and len(err.splitlines()) == 1
    code, out, err = run(capsys, *argv, "--json")
    assert code != 0
    doc = json.loads(out)
    assert doc["error"] == "InvalidArgument" and reason in doc["message"]
    assert set(doc) == {"error", "message"}


@pytest.mark.parametrize("ec", ["4", "4+", "+2", "0+2", "four+two"])
def test_a_malformed_ec_fails_before_any_request(fake, capsys, ec):
    argv = ["cluster", "pool", "create", "--ec", ec, "n1", "--endpoint", fake.endpoint]
    code, out, err = run(capsys, *argv)
    assert code != 0 and "basalt: " in err and ("K+M" in err or "data shard" in err)
    code, out, err = run(capsys, *argv, "--json")
    assert code != 0 and json.loads(out)["error"] in ("InvalidArgument", "UsageError")
    assert fake.requests == []


def test_options_after_the_subcommand(fake, capsys):
    fake.answers[("GET", f"{API}/status")] = (200, STATUS)
    code, out, err = run(capsys, "cluster", "status", "--json", "--endpoint", fake.endpoint)
    assert code == 0, err
    assert json.loads(out) == STATUS
    code, out, err = run(capsys, "cluster", "--json", "status", "--endpoint", fake.endpoint)
    assert code == 0, err
    assert json.loads(out) == STATUS
    assert len(fake.requests) == 2


def test_without_endpoint_the_environment_is_used(fake, capsys, monkeypatch):
    monkeypatch.setenv("BASALT_ENDPOINT", fake.endpoint)
    fake.answers[("GET", f"{API}/status")] = (200, STATUS)
    code, out, err = run(capsys, "cluster", "status", "--json")
    assert code == 0 and json.loads(out) == STATUS
    monkeypatch.setenv("BASALT_ENDPOINT", "http://127.0.0.1:1")
    code, out, err = run(capsys, "cluster", "status", "--json")
    assert code != 0 and json.loads(out)["error"] == "EndpointUnreachable"


def test_pool_drain(fake, capsys):
    pool = _pool("old", 2, 1, "draining", ["a", "b", "c"])
    fake.answers[("POST", f"{API}/pools/old/drain")] = (200, pool)
    code, out, err = run(capsys, "cluster", "pool", "drain", "old", "--endpoint", fake.endpoint)
    assert code == 0, err
    assert [(r["method"], r["path"]) for r in fake.requests] == [("POST", f"{API}/pools/old/drain")]
    assert "old" in out and "draining" in out
    code, out, err = run(capsys, "--json", "cluster", "pool", "drain", "old",
                         "--endpoint", fake.endpoint)
    assert code == 0 and json.loads(out) == pool


def test_pool_drain_refused(fake, capsys):
    fake.answers[("POST", f"{API}/pools/gone/drain")] = (
        404, {"code": "NoSuchPool", "message": "no pool named gone"})
    code, out, err = run(capsys, "cluster", "pool", "drain", "gone", "--json",
                         "--endpoint", fake.endpoint)
    assert code != 0
    assert json.loads(out) == {"error": "NoSuchPool", "message": "no pool named gone (NoSuchPool)"}


def test_node_remove(fake, capsys):
    fake.answers[("DELETE", f"{API}/nodes/bravo")] = (200, {"removed": "bravo"})
    code, out, err = run(capsys, "cluster", "node", "remove", "bravo",
                         "--endpoint", fake.endpoint)
    assert code == 0, err
    assert [(r["method"], r["path"]) for r in fake.requests] == [("DELETE", f"{API}/nodes/bravo")]
    assert out.strip() == "removed node bravo"
    code, out, err = run(capsys, "--json", "cluster", "node", "remove", "bravo",
                         "--endpoint", fake.endpoint)
    assert code == 0 and json.loads(out) == {"removed": "bravo"}


def test_node_remove_refused_while_in_use(fake, capsys):
    reason = "node alpha holds disks of pool main (active)"
    fake.answers[("DELETE", f"{API}/nodes/alpha")] = (409, {"code": "NodeInUse", "message": reason})
    code, out, err = run(capsys, "cluster", "node", "remove", "alpha", "--endpoint", fake.endpoint)
    assert code != 0 and reason in err and "NodeInUse" in err and out == ""


def test_names_are_escaped_in_the_path(fake, capsys):
    fake.answers[("DELETE", f"{API}/nodes/a b")] = (200, {"removed": "a b"})
    code, out, err = run(capsys, "cluster", "node", "remove", "a b", "--endpoint", fake.endpoint)
    assert code == 0, err
    assert fake.requests[0]["path"] == f"{API}/nodes/a%20b"


def test_missing_arguments_are_usage_errors(fake, capsys):
    code, out, err = run(capsys, "--json", "cluster", "pool", "create", "--ec", "2+1",
                         "--endpoint", fake.endpoint)
    assert code == 2 and json.loads(out)["error"] == "UsageError"
    code, out, err = run(capsys, "cluster", "pool", "create", "n1", "--endpoint", fake.endpoint)
    assert code == 2 and "--ec" in err
    assert fake.requests == []
