"""Bucket CORS without a server: CORSConfiguration parsing and validation (S3's codes and
messages), rendering through botocore, rule matching with wildcards, the headers S3
sends, and the gateway hooks (nothing read without an Origin)."""

from __future__ import annotations

import asyncio

import pytest
from s3_testkit import stubbed_s3

from gateway import cors
from gateway.cors_xml import (
    VARY,
    CorsConfig,
    CorsRule,
    parse_cors,
    render_cors,
    request_headers,
    wildcard_match,
)
from gateway.errors import InvalidRequest, MalformedXML
from gateway.router import Route

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def doc(*rules: str, ns: bool = True) -> bytes:
    xmlns = f' xmlns="{NS}"' if ns else ""
    return f"<CORSConfiguration{xmlns}>{''.join(rules)}</CORSConfiguration>".encode()


def xrule(*, origins=("*",), methods=("GET",), headers=(), expose=(), extra="") -> str:
    parts = [f"<AllowedOrigin>{o}</AllowedOrigin>" for o in origins]
    parts += [f"<AllowedMethod>{m}</AllowedMethod>" for m in methods]
    parts += [f"<AllowedHeader>{h}</AllowedHeader>" for h in headers]
    parts += [f"<ExposeHeader>{h}</ExposeHeader>" for h in expose]
    return "<CORSRule>" + "".join(parts) + extra + "</CORSRule>"


# --- parsing ------------------------------------------------------------------

def test_parse_every_field_from_botocore():
    s3 = stubbed_s3()
    rules = [{"ID": "web", "AllowedHeaders": ["Content-Type", "x-amz-*"],
              "AllowedMethods": ["PUT", "POST"], "AllowedOrigins": ["https://*.example.com"],
              "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3000},
             {"AllowedMethods": ["GET"], "AllowedOrigins": ["*", ""]}]
    s3.client.put_bucket_cors(Bucket="b", CORSConfiguration={"CORSRules": rules})
    config = parse_cors(s3.requests[0].body)
    assert config.rules == (
        CorsRule(("https://*.example.com",), ("PUT", "POST"), ("Content-Type", "x-amz-*"),
                 ("ETag",), 3000, "web"),
        CorsRule(("*", ""), ("GET",)))


def test_render_round_trips_through_botocore():
    config = CorsConfig((
        CorsRule(("https://a.example",), ("GET", "HEAD"), ("*",), ("ETag", "x-amz-version-id"),
                 0, "id <&>"),
        CorsRule(("*",), ("DELETE",))))
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, {}, render_cors(config))
    assert s3.client.get_bucket_cors(Bucket="b")["CORSRules"] == [
        {"ID": "id <&>", "AllowedHeaders": ["*"], "AllowedMethods": ["GET", "HEAD"],
         "AllowedOrigins": ["https://a.example"], "ExposeHeaders": ["ETag", "x-amz-version-id"],
         "MaxAgeSeconds": 0},
        {"AllowedMethods": ["DELETE"], "AllowedOrigins": ["*"]}]
    assert parse_cors(render_cors(config)) == config


def test_pack_unpack():
    config = parse_cors(doc(xrule(origins=("http://x",), headers=("a",), expose=("b",),
                                  extra="<MaxAgeSeconds>5</MaxAgeSeconds><ID>i</ID>")))
    assert CorsConfig.unpack(config.pack()) == config


def test_values_are_trimmed_and_namespace_optional():
    config = parse_cors(doc("<CORSRule>\n  <AllowedOrigin> http://a </AllowedOrigin>\n"
                            "  <AllowedMethod>\n GET\n</AllowedMethod>\n</CORSRule>", ns=False))
    assert config.rules[0].origins == ("http://a",) and config.rules[0].methods == ("GET",)


@pytest.mark.parametrize("body", [
    b"", b"   ", b"<CORSConfiguration>", b"not xml",
    b"<LifecycleConfiguration/>",
    doc(),                                                             # no rule
    doc("<Rule/>", xrule()),                                           # unknown element
    doc(xrule(origins=())),                                            # no origin
    doc(xrule(methods=())),                                            # no method
    doc(xrule(extra="<Colour>red</Colour>")),
    doc(xrule(extra="<ID>a</ID><ID>b</ID>")),
    doc(xrule(extra="<ID>" + "x" * 256 + "</ID>")),
    doc(xrule(extra="<MaxAgeSeconds>1</MaxAgeSeconds><MaxAgeSeconds>2</MaxAgeSeconds>")),
    doc(xrule(extra="<MaxAgeSeconds>soon</MaxAgeSeconds>")),
    doc(xrule(extra="<MaxAgeSeconds>-1</MaxAgeSeconds>")),
    doc(xrule(extra="<MaxAgeSeconds>99999999999</MaxAgeSeconds>")),
    doc(xrule(extra="<AllowedMethod><GET/></AllowedMethod>")),
    doc("text" + xrule()),
    b'<!DOCTYPE x [<!ENTITY e "GET">]>' + doc(xrule(methods=("&e;",))),
    doc(xrule()) + b" " * (64 * 1024),
])
def test_malformed(body):
    with pytest.raises(MalformedXML):
        parse_cors(body)


@pytest.mark.parametrize(("body", "message"), [
    (doc(xrule(methods=("GET", "PATCH"))),
     "Found unsupported HTTP method in CORS config. Unsupported method is PATCH"),
    (doc(xrule(methods=("get",))),
     "Found unsupported HTTP method in CORS config. Unsupported method is get"),
    (doc(xrule(methods=("",))),
     "Found unsupported HTTP method in CORS config. Unsupported method is "),
    (doc(xrule(origins=("http://*.*.example.com",))),
     'AllowedOrigin "http://*.*.example.com" can not have more than one wildcard.'),
    (doc(xrule(headers=("x-*-*",))), 'AllowedHeader "x-*-*" can not have more than one wildcard.'),
    (doc(xrule(expose=("*",))),
     'ExposeHeader "*" contains wildcard. We currently do not support wildcard for ExposeHeader.'),
    (doc(xrule(expose=("x y",))), 'ExposeHeader "x y" contains invalid character.'),
    (doc(*[xrule()] * 101),
     "The number of CORS rules should not exceed allowed limit of 100 rules."),
])
def test_invalid_request(body, message):
    with pytest.raises(InvalidRequest) as err:
        parse_cors(body)
    assert err.value.message == message and err.value.status == 400


def test_shape_errors_come_before_value_errors():
    with pytest.raises(MalformedXML):
        parse_cors(doc(xrule(methods=("PATCH",)), xrule(origins=())))


def test_limits_are_inclusive():
    assert len(parse_cors(doc(*[xrule()] * 100)).rules) == 100
    assert parse_cors(doc(xrule(extra="<ID>" + "x" * 255 + "</ID>"))).rules[0].id == "x" * 255


# --- matching -----------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("*", "", True), ("*", "http://anything:8080", True),
    ("http://*.example.com", "http://a.example.com", True),
    ("http://*.example.com", "http://a.b.example.com", True),
    ("http://*.example.com", "http://example.com", False),
    ("http://*.example.com", "https://a.example.com", False),
    ("http://*.example.com", "http://a.example.com/", False),
    ("http://*.example.com", "http://a.example.com.evil", False),
    ("https://app.example.com", "https://app.example.com", True),
    ("https://app.example.com", "https://APP.example.com", False),   # origins match exactly
    ("ab*ba", "aba", False), ("ab*ba", "abba", True),                 # parts may not overlap
    ("x-amz-*", "x-amz-date", True), ("*-id", "x-request-id", True),
])
def test_wildcard_match(pattern, value, expected):
    assert wildcard_match(pattern, value) is expected


def test_request_headers_parsing():
    assert request_headers(None) is None and request_headers("") is None
    assert request_headers(" , ,") is None
    assert request_headers("Content-Type,X-Amz-Date , ,x-amz-META-a") == [
        "content-type", "x-amz-date", "x-amz-meta-a"]


RULES = parse_cors(doc(
    xrule(origins=("https://app.example.com", "http://*.example.net"), methods=("PUT", "POST"),
          headers=("Content-Type", "X-Amz-*"), extra="<MaxAgeSeconds>1</MaxAgeSeconds>"),
    xrule(origins=("*",), methods=("GET", "HEAD"), extra="<MaxAgeSeconds>2</MaxAgeSeconds>"),
    xrule(origins=("*",), methods=("GET",), headers=("*",),
          extra="<MaxAgeSeconds>3</MaxAgeSeconds>"),
))


@pytest.mark.parametrize(("origin", "method", "headers", "max_age"), [
    ("https://app.example.com", "PUT", None, 1),
    ("https://app.example.com", "POST", ["content-type", "x-amz-date"], 1),
    ("http://x.example.net", "PUT", ["x-amz-meta-colour"], 1),
    ("https://app.example.com", "PUT", ["range"], None),          # header not allowed anywhere
    ("https://app.example.com", "DELETE", None, None),            # method allowed nowhere
    ("https://app.example.com", "put", None, None),               # methods match exactly
    ("https://other.example.com", "PUT", None, None),             # origin not allowed
    ("https://other.example.com", "GET", None, 2),                # first matching rule wins
    ("https://other.example.com", "GET", ["range"], 3),           # ... that allows the headers
    ("https://other.example.com", "HEAD", ["range"], None),
])
def test_first_matching_rule(origin, method, headers, max_age):
    found = RULES.match(origin, method, headers)
    assert (found.max_age if found else None) == max_age


def test_response_headers_name_the_origin_unless_any_origin_is_allowed():
    first = RULES.rules[0]
    assert first.response_headers("http://x.example.net", ["content-type", "x-amz-date"]) == {
        "Access-Control-Allow-Origin": "http://x.example.net",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Headers": "content-type, x-amz-date",
        "Access-Control-Allow-Methods": "PUT, POST", "Access-Control-Max-Age": "1", "Vary": VARY}
    rule = CorsRule(("*", "https://a"), ("GET",), expose=("ETag", "x-amz-request-id"))
    assert rule.response_headers("https://a", None) == {
        "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET",
        "Access-Control-Expose-Headers": "ETag, x-amz-request-id", "Vary": VARY}


# --- the gateway hooks --------------------------------------------------------

class Store:
    def __init__(self, raw: bytes | None = None, error: Exception | None = None) -> None:
        self.raw, self.error, self.reads = raw, error, 0

    async def bucket_config(self, bucket: str, kind: str) -> bytes | None:
        self.reads += 1
        assert kind == "cors"
        if self.error is not None:
            raise self.error
        return self.raw


class Req(dict):
    def __init__(self, method: str = "GET", **headers: str) -> None:
        from multidict import CIMultiDict
        super().__init__()
        self.method, self.headers = method, CIMultiDict(
            {k.replace("_", "-"): v for k, v in headers.items()})


def prepare(req: Req, store: Store, route: Route | None = None) -> dict | None:
    asyncio.run(cors.prepare(req, route or Route("GetObject", "b", "k"), store))
    return req.get("cors_headers")


def test_prepare_reads_nothing_without_an_origin():
    store = Store(error=AssertionError("read on the hot path"))
    assert prepare(Req(), store) is None
    assert prepare(Req(Origin=""), store) is None
    assert store.reads == 0


def test_prepare_finds_the_rule_for_the_actual_request():
    store = Store(RULES.pack())
    assert prepare(Req("PUT", Origin="https://app.example.com"), store)[
        "Access-Control-Max-Age"] == "1"
    assert prepare(Req("GET", Origin="https://app.example.com"), store)[
        "Access-Control-Allow-Origin"] == "*"
    assert prepare(Req("DELETE", Origin="https://app.example.com"), store) is None
    # A preflight header on an actual request is matched as S3 does.
    assert prepare(Req("GET", Origin="https://o", Access_Control_Request_Method="DELETE"),
                   store) is None
    assert prepare(Req("HEAD", Origin="https://o", Access_Control_Request_Headers="range"),
                   store) is None
    assert store.reads == 5


def test_prepare_is_quiet_without_rules_or_bucket():
    import storaged
    assert prepare(Req(Origin="https://o"), Store(None)) is None
    assert prepare(Req(Origin="https://o"), Store(error=storaged.NoSuchBucket("b"))) is None
    assert prepare(Req(Origin="https://o"), Store(RULES.pack()), Route("ListBuckets")) is None
    untouched = Store(error=AssertionError("preflight reads in its handler"))
    assert prepare(Req(Origin="https://o"), untouched, Route("PreflightCors", "b")) is None


def test_add_headers_only_when_found_and_keeps_vary():
    from aiohttp import web
    response = web.Response()
    cors.add_headers(Req(), response)
    assert "Access-Control-Allow-Origin" not in response.headers
    req = Req(Origin="https://o")
    req["cors_headers"] = RULES.rules[1].response_headers("https://o", None)
    response = web.Response(headers={"Vary": "Accept-Encoding"})
    cors.add_headers(req, response)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Vary"] == "Accept-Encoding, " + VARY
