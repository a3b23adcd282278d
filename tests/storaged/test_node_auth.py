"""Node request signing: every way a request is refused, and what passes."""

import pytest

from storaged import node_auth
from storaged.node_auth import (
    CONTENT,
    NODE,
    NONCE,
    SIGNATURE,
    TIME,
    UNSIGNED,
    AuthError,
    Verifier,
    body_digest,
    canonical_query,
    sign,
)

SECRET = b"s" * 32
NOW = 1_700_000_000 * 10**9


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


def signed(body=b"payload", *, secret=SECRET, method="POST", path="/_basalt/node/v1/disks/d/read",
           query=None, node="node-a", now=NOW, nonce=None, content=None):
    query = canonical_query({"offset": 5, "b": "x y"}) if query is None else query
    content = body_digest(body) if content is None else content
    return method, path, query, sign(secret, method, path, query, node, content,
                                     now_ns=now, nonce=nonce)


@pytest.fixture
def verifier():
    return Verifier(SECRET, clock=Clock())


def test_a_signed_request_passes(verifier):
    method, path, query, headers = signed()
    claims = verifier.verify(method, path, query, headers)
    assert claims.node == "node-a" and claims.time_ns == NOW and not claims.unsigned
    verifier.check_body(claims, b"payload")


def test_canonical_query_is_sorted_and_escaped():
    assert canonical_query({"z": 1, "a": "x y/é"}) == "a=x%20y%2F%C3%A9&z=1"
    assert canonical_query([("k", "2"), ("k", "1")]) == "k=1&k=2"
    assert canonical_query({}) == ""


@pytest.mark.parametrize("header", [NODE, TIME, NONCE, CONTENT, SIGNATURE])
def test_missing_header_is_refused(verifier, header):
    method, path, query, headers = signed()
    del headers[header]
    with pytest.raises(AuthError, match=f"missing {header}"):
        verifier.verify(method, path, query, headers)


@pytest.mark.parametrize("header,value", [
    (NODE, "bad node\n"), (TIME, "12a"), (TIME, "-5"), (NONCE, "abc"), (NONCE, "G" * 32),
    (CONTENT, "sha"), (SIGNATURE, "00"),
])
def test_malformed_header_is_refused(verifier, header, value):
    method, path, query, headers = signed()
    headers[header] = value
    with pytest.raises(AuthError, match="malformed"):
        verifier.verify(method, path, query, headers)


def test_wrong_secret_is_refused(verifier):
    method, path, query, headers = signed(secret=b"t" * 32)
    with pytest.raises(AuthError, match="signature does not match"):
        verifier.verify(method, path, query, headers)


@pytest.mark.parametrize("what", ["method", "path", "query", "node", "time", "nonce", "content"])
def test_every_signed_part_counts(verifier, what):
    method, path, query, headers = signed()
    if what == "method":
        method = "PUT"
    elif what == "path":
        path += "x"
    elif what == "query":
        query = canonical_query({"offset": 6, "b": "x y"})
    elif what == "node":
        headers[NODE] = "node-b"
    elif what == "time":
        headers[TIME] = str(NOW + 1)
    elif what == "nonce":
        headers[NONCE] = "0" * 32
    else:
        headers[CONTENT] = body_digest(b"other")
    with pytest.raises(AuthError, match="signature does not match"):
        verifier.verify(method, path, query, headers)


@pytest.mark.parametrize("offset_s", [-301, 301, -10**6])
def test_time_skew_beyond_window_is_refused(verifier, offset_s):
    method, path, query, headers = signed(now=NOW + offset_s * 10**9)
    with pytest.raises(AuthError, match="off"):
        verifier.verify(method, path, query, headers)


@pytest.mark.parametrize("offset_s", [-299, 299])
def test_time_skew_within_window_passes(verifier, offset_s):
    verifier.verify(*signed(now=NOW + offset_s * 10**9))


def test_replayed_nonce_is_refused(verifier):
    request = signed()
    verifier.verify(*request)
    with pytest.raises(AuthError, match="replayed"):
        verifier.verify(*request)
    verifier.verify(*signed())  # a fresh nonce passes


def test_nonces_expire_with_their_window():
    clock = Clock()
    verifier = Verifier(SECRET, skew=300, clock=clock)
    old = signed(now=NOW)
    verifier.verify(*old)
    assert len(verifier) == 1
    clock.now = NOW + 301 * 10**9
    verifier.verify(*signed(now=clock.now))
    assert len(verifier) == 1  # the old nonce is forgotten...
    with pytest.raises(AuthError, match="off"):  # ...since its request is refused anyway
        verifier.verify(*old)


def test_nonce_cache_is_bounded_and_fails_closed():
    clock = Clock()
    verifier = Verifier(SECRET, max_nonces=3, clock=clock)
    requests = [signed(now=NOW + i) for i in range(5)]
    for request in requests:
        verifier.verify(*request)
    assert len(verifier) == 3
    # The dropped nonces cannot be replayed: requests no newer than them are refused.
    for request in requests[:2]:
        with pytest.raises(AuthError):
            verifier.verify(*request)
    with pytest.raises(AuthError, match="too old"):
        verifier.verify(*signed(now=NOW))
    verifier.verify(*signed(now=NOW + 10))  # newer requests still pass


def test_body_not_matching_its_digest_is_refused(verifier):
    claims = verifier.verify(*signed(body=b"payload"))
    with pytest.raises(AuthError, match="body does not match"):
        verifier.check_body(claims, b"payloae")


def test_unsigned_payload_skips_the_body_check(verifier):
    claims = verifier.verify(*signed(content=UNSIGNED))
    assert claims.unsigned
    verifier.check_body(claims, b"anything")


def test_secret_must_be_long_enough(monkeypatch):
    with pytest.raises(ValueError):
        Verifier(b"short")
    with pytest.raises(ValueError, match="BASALT_CLUSTER_SECRET"):
        node_auth.cluster_secret({})
    assert node_auth.cluster_secret({"BASALT_CLUSTER_SECRET": "x" * 20}) == b"x" * 20
