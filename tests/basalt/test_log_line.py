"""The server's log line (basalt/logs.py): its text is unchanged (operators and tests
parse it) and making it does not look up the caller nor run the quoting regex on
plain values. Run in a child process: logs.setup() changes the logging module's
globals and starts a flusher thread."""

from __future__ import annotations

import json
import re
import subprocess
import sys

SCRIPT = r"""
import json, logging, sys
from basalt import logs

logs.setup("info")
calls = {"findCaller": 0, "regex": 0}
find_caller = logging.Logger.findCaller

def counting_find_caller(self, *args, **kwargs):
    calls["findCaller"] += 1
    return find_caller(self, *args, **kwargs)

class CountingPattern:
    def __init__(self, pattern):
        self.pattern = pattern

    def search(self, s):
        calls["regex"] += 1
        return self.pattern.search(s)

logging.Logger.findCaller = counting_find_caller
logs._NEEDS_QUOTES = CountingPattern(logs._NEEDS_QUOTES)
log = logging.getLogger("gateway.app")
for _ in range(3):
    log.info("request", extra={"fields": {
        "op": "GetObject", "method": "GET", "resource": "/bench/small/00000123",
        "status": 200, "error": None, "in": 0, "out": 4096, "ms": 0.41,
        "id": "17C3F2A9B8D0E1F2", "remote": "127.0.0.1"}})
plain = dict(calls)
log.info("odd values", extra={"fields": {
    "empty": "", "space": "a b", "quote": 'say "hi"', "eq": "a=b", "nl": "x\ny",
    "tab": "a\tb", "nbsp": "a\xa0b", "ctl": "a\x01b", "uni": "a\xf1b", "neg": -3,
    "flag": True, "big": 10**20, "tiny": 1e-05}})
logging.getLogger().handlers[0].flush()
print(json.dumps({"plain": plain}))
"""

REQUEST = ("level=info logger=gateway.app msg=request op=GetObject method=GET "
           "resource=/bench/small/00000123 status=200 error=None in=0 out=4096 ms=0.41 "
           "id=17C3F2A9B8D0E1F2 remote=127.0.0.1")
ODD = ('level=info logger=gateway.app msg="odd values" empty="" space="a b" '
       'quote="say \\"hi\\"" eq="a=b" nl="x\\ny" tab="a\tb" nbsp="a\xa0b" ctl=a\x01b '
       'uni=a\xf1b neg=-3 flag=True big=100000000000000000000 tiny=1e-05')
STAMP = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def test_request_line_text_and_what_making_it_costs():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=30,
                          check=True)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 4
    assert all(STAMP.match(line) for line in lines)
    assert [STAMP.sub("", line) for line in lines] == [REQUEST] * 3 + [ODD]
    # No stack walk for the caller's file and line, no regex for plain values.
    assert json.loads(done.stdout) == {"plain": {"findCaller": 0, "regex": 0}}
