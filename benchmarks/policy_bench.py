#!/usr/bin/env python3
"""Policy evaluation cost: Policy.evaluate() of a 20-statement bucket policy.

The policy mixes what real bucket policies hold: wildcard actions and resources,
principals by account and user, ``${aws:username}`` resources and conditions on
the source address, TLS, prefixes and tags. Prints µs per evaluation for a request
that the last Allow matches (every Deny checked first), one that nothing matches,
and the parse time of the document.

    .venv/bin/python benchmarks/policy_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import time

from gateway.policy import RequestContext, parse_policy

BUCKET = "arn:aws:s3:::bench"
OWNER = "111122223333"


def document() -> str:
    statements = [
        {"Sid": "DenyHttp", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [BUCKET, BUCKET + "/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "DenyOutside", "Effect": "Deny", "Principal": "*", "Action": "s3:Delete*",
         "Resource": BUCKET + "/*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}}},
        {"Sid": "DenyUnencrypted", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": BUCKET + "/*",
         "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}},
        {"Sid": "DenySecret", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": BUCKET + "/*", "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "secret"}}},
    ]
    for i in range(15):
        statements.append({
            "Sid": f"Team{i}", "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam::{OWNER}:user/team{i}-lead", f"{444455556600 + i}"]},
            "Action": ["s3:GetObject*", "s3:ListBucket"],
            "Resource": [f"{BUCKET}/team{i}/*", BUCKET],
            "Condition": {"StringLike": {"s3:prefix": [f"team{i}/*", ""]}},
        })
    statements.append({
        "Sid": "Home", "Effect": "Allow", "Principal": {"AWS": OWNER},
        "Action": ["s3:GetObject", "s3:PutObject"],
        "Resource": BUCKET + "/home/${aws:username}/*",
        "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}, "Bool": {"aws:SecureTransport": "true"}},
    })
    assert len(statements) == 20
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def per_call_us(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            fn()
        n += 1000
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    text = document()
    policy = parse_policy(text, bucket="bench")
    keys = {"aws:SourceIp": "10.1.2.3", "aws:SecureTransport": "true", "s3:ExistingObjectTag/class": "public"}
    allowed = RequestContext("s3:GetObject", BUCKET + "/home/alice/notes.txt", OWNER, "alice", keys=keys)
    unmatched = RequestContext("s3:GetObject", BUCKET + "/elsewhere/x", OWNER, "alice", keys=keys)
    assert policy.evaluate(allowed).name == "ALLOW"
    assert policy.evaluate(unmatched).name == "NOT_APPLICABLE"
    print(f"policy: {len(policy.statements)} statements, {len(text)} bytes")
    parse_us = per_call_us(lambda: parse_policy(text, bucket="bench"), args.seconds)
    print(f"parse:                 {parse_us:8.1f} µs")
    for name, ctx in (("evaluate (allowed)", allowed), ("evaluate (no match)", unmatched)):
        print(f"{name + ':':22} {per_call_us(lambda ctx=ctx: policy.evaluate(ctx), args.seconds):8.2f} µs")
    build = lambda: RequestContext("s3:GetObject", BUCKET + "/home/alice/x", OWNER, "alice", keys=keys)  # noqa: E731
    print(f"RequestContext():      {per_call_us(build, args.seconds):8.2f} µs")


if __name__ == "__main__":
    main()
