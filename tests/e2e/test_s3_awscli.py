"""aws-cli (v1, from PyPI) run as a subprocess against `basalt serve`, over HTTP and HTTPS.

Every command gets the server's environment (credentials, AWS_ENDPOINT_URL,
AWS_CA_BUNDLE) plus an explicit ``--endpoint-url`` / ``--ca-bundle``, and a
private AWS_CONFIG_FILE so nothing from the developer's ~/.aws leaks in.
aws-cli starts in about a second, so each test batches its work into few calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
import uuid

import pytest

KIB, MIB = 1024, 1 << 20
AWS = os.path.join(os.path.dirname(sys.executable), "aws")

# aws-cli switches to multipart uploads at 8 MiB; multipart is not implemented
# yet, so the "big" config raises the threshold for the one file above it. (A
# config file rather than --profile: an explicit profile makes aws-cli ignore
# the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY the server env carries.)
CONFIGS = {
    "config": "[default]\nregion = us-east-1\ns3 =\n    max_concurrent_requests = 16\n",
    "config-big": "[default]\nregion = us-east-1\ns3 =\n    multipart_threshold = 64MB\n"
                  "    multipart_chunksize = 64MB\n",
}


@pytest.fixture(scope="module")
def aws_config(tmp_path_factory):
    if not os.path.exists(AWS):
        pytest.fail(f"aws-cli is not installed in the venv ({AWS}): pip install -e '.[test]'")
    d = tmp_path_factory.mktemp("awscfg")
    for name, text in CONFIGS.items():
        (d / name).write_text(text)
    (d / "credentials").write_text("")
    return d


@pytest.fixture
def aws(basalt, aws_config, tmp_path):
    """Run ``aws ARGS...`` in ``tmp_path`` (aws-cli prints local paths relative to its
    working directory); returns the CompletedProcess (check=True asserts exit 0)."""

    def run(*args: str, check: bool = True, big: bool = False,
            input: bytes | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        env = dict(basalt.env, AWS_CONFIG_FILE=str(aws_config / ("config-big" if big else "config")),
                   AWS_SHARED_CREDENTIALS_FILE=str(aws_config / "credentials"),
                   PYTHONIOENCODING="utf-8", AWS_PAGER="")
        env.pop("AWS_PROFILE", None)
        cmd = [AWS, "--endpoint-url", basalt.endpoint]
        if basalt.ca_path:
            cmd += ["--ca-bundle", basalt.ca_path]
        cmd += list(args)
        out = subprocess.run(cmd, env=env, capture_output=True, input=input, timeout=timeout,
                             cwd=tmp_path)
        out.stdout_text = out.stdout.decode("utf-8", "replace")
        out.stderr_text = out.stderr.decode("utf-8", "replace")
        if check and out.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} exited {out.returncode}:\n"
                                 f"{out.stdout_text}\n{out.stderr_text}\n--- server log tail:\n"
                                 f"{basalt.log()[-3000:]}")
        return out

    return run


def api(aws, *args: str):
    """``aws s3api ... --output json`` parsed (None for an empty output)."""
    out = aws("s3api", *args, "--output", "json").stdout_text.strip()
    return json.loads(out) if out else None


def lines(out: subprocess.CompletedProcess, verb: str) -> list[str]:
    # progress lines are overwritten with \r and padded with spaces
    text = out.stdout_text.replace("\r", "\n")
    return [ln.rstrip() for ln in text.splitlines() if ln.startswith(verb + ":")]


def new_name(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_digests(root) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = sha256_file(full)
    return out


# --- buckets -----------------------------------------------------------------------

def test_mb_ls_rb_and_rb_force(aws, s3):
    name, full = new_name(), new_name("full")
    out = aws("s3", "mb", f"s3://{name}")
    assert out.stdout_text.strip() == f"make_bucket: {name}"
    aws("s3", "mb", f"s3://{full}")
    listed = aws("s3", "ls").stdout_text
    assert {name, full} <= {ln.split()[-1] for ln in listed.splitlines()}
    again = aws("s3", "mb", f"s3://{name}", check=False)
    assert again.returncode != 0 and "BucketAlreadyOwnedByYou" in again.stderr_text
    assert api(aws, "get-bucket-location", "--bucket", name,
               "--query", "LocationConstraint") is None

    s3.put_object(Bucket=full, Key="a/b/c.txt", Body=b"c")
    s3.put_object(Bucket=full, Key="top.txt", Body=b"t")
    refused = aws("s3", "rb", f"s3://{full}", check=False)
    assert refused.returncode != 0 and "BucketNotEmpty" in refused.stderr_text
    s3.head_bucket(Bucket=full)  # still there, contents too
    assert s3.list_objects_v2(Bucket=full)["KeyCount"] == 2

    assert aws("s3", "rb", f"s3://{name}").stdout_text.strip() == f"remove_bucket: {name}"
    forced = aws("s3", "rb", "--force", f"s3://{full}")
    assert sorted(lines(forced, "delete")) == [f"delete: s3://{full}/a/b/c.txt",
                                               f"delete: s3://{full}/top.txt"]
    assert f"remove_bucket: {full}" in forced.stdout_text
    remaining = {ln.split()[-1] for ln in aws("s3", "ls").stdout_text.splitlines()}
    assert name not in remaining and full not in remaining
    gone = aws("s3", "ls", f"s3://{name}", check=False)
    assert gone.returncode != 0 and "NoSuchBucket" in gone.stderr_text


# --- cp ------------------------------------------------------------------------------

def test_cp_up_and_down(aws, s3, bucket, tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from aws-cli\n")
    medium = tmp_path / "medium.bin"   # a few MiB, below aws-cli's 8 MiB multipart threshold
    medium.write_bytes(os.urandom(5 * MIB + 123))
    large = tmp_path / "large.bin"     # above it: single PUT only with the raised threshold
    large.write_bytes(os.urandom(12 * MIB + 7))

    out = aws("s3", "cp", "small.txt", f"s3://{bucket}/docs/small.txt",
              "--content-type", "text/plain", "--metadata", "owner=ada,project=basalt")
    assert lines(out, "upload") == [f"upload: ./small.txt to s3://{bucket}/docs/small.txt"]
    aws("s3", "cp", str(medium), f"s3://{bucket}/bin/medium.bin")
    aws("s3", "cp", str(large), f"s3://{bucket}/bin/large.bin", big=True)
    aws("s3", "cp", "-", f"s3://{bucket}/stdin.txt", input=b"from stdin\n" * 1000)

    head = s3.head_object(Bucket=bucket, Key="docs/small.txt")
    assert head["ContentType"] == "text/plain"
    assert head["Metadata"] == {"owner": "ada", "project": "basalt"}
    for key, path in [("bin/medium.bin", medium), ("bin/large.bin", large)]:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == path.stat().st_size
        assert head["ETag"] == f'"{hashlib.md5(path.read_bytes()).hexdigest()}"'  # one PUT

    down = tmp_path / "down"
    aws("s3", "cp", f"s3://{bucket}/docs/small.txt", str(down / "small.txt"))
    aws("s3", "cp", f"s3://{bucket}/bin/medium.bin", str(down / "medium.bin"))
    aws("s3", "cp", f"s3://{bucket}/bin/large.bin", str(down / "large.bin"), big=True)
    for path in (small, medium, large):
        assert sha256_file(down / path.name) == sha256_file(path), path.name
    assert aws("s3", "cp", f"s3://{bucket}/stdin.txt", "-").stdout == b"from stdin\n" * 1000

    # recursive cp down of a prefix, and server-side copy between keys
    out = aws("s3", "cp", "--recursive", f"s3://{bucket}/bin/", str(tmp_path / "bin"),
              big=True)
    assert len(lines(out, "download")) == 2
    assert tree_digests(tmp_path / "bin") == {"medium.bin": sha256_file(medium),
                                               "large.bin": sha256_file(large)}
    out = aws("s3", "cp", f"s3://{bucket}/bin/medium.bin", f"s3://{bucket}/copied/medium.bin")
    assert lines(out, "copy") == [f"copy: s3://{bucket}/bin/medium.bin to "
                                  f"s3://{bucket}/copied/medium.bin"]
    body = s3.get_object(Bucket=bucket, Key="copied/medium.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256_file(medium)

    missing = aws("s3", "cp", f"s3://{bucket}/nope", str(tmp_path / "nope"), check=False)
    assert missing.returncode != 0 and "404" in missing.stderr_text
    assert not (tmp_path / "nope").exists()


# --- ls and rm ------------------------------------------------------------------------

def test_ls_prefixes_recursive_and_rm(aws, s3, bucket):
    keys = {"top.txt": 3, "photos/2024/a.jpg": 10, "photos/2024/b.jpg": 20,
            "photos/readme.md": 5, "logs/x.log": 7, "logs/old/y.log": 0, "with space/ü.txt": 4}
    for key, size in keys.items():
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)

    root = aws("s3", "ls", f"s3://{bucket}/").stdout_text.splitlines()
    prefixes = sorted(ln.split("PRE ", 1)[1] for ln in root if "PRE " in ln)
    assert prefixes == ["logs/", "photos/", "with space/"]
    files = [ln.split(None, 3) for ln in root if "PRE " not in ln]
    assert [(f[2], f[3]) for f in files] == [("3", "top.txt")]

    sub = aws("s3", "ls", f"s3://{bucket}/photos/").stdout_text.splitlines()
    assert [ln.split("PRE ", 1)[1] for ln in sub if "PRE " in ln] == ["2024/"]
    assert [ln.split(None, 3)[3] for ln in sub if "PRE " not in ln] == ["readme.md"]

    rec = aws("s3", "ls", "--recursive", "--summarize", f"s3://{bucket}").stdout_text
    listed = {}
    for ln in rec.splitlines():
        parts = ln.split(None, 3)
        if len(parts) == 4 and parts[0][:2] == "20":
            listed[parts[3]] = int(parts[2])
    assert listed == keys
    assert "Total Objects: 7" in rec and f"Total Size: {sum(keys.values())}" in rec

    out = aws("s3", "rm", f"s3://{bucket}/top.txt")
    assert lines(out, "delete") == [f"delete: s3://{bucket}/top.txt"]
    out = aws("s3", "rm", "--recursive", f"s3://{bucket}/photos/")
    assert sorted(lines(out, "delete")) == sorted(
        f"delete: s3://{bucket}/{k}" for k in keys if k.startswith("photos/"))
    out = aws("s3", "rm", "--recursive", f"s3://{bucket}/logs/", "--exclude", "*",
              "--include", "*.log", "--dryrun")
    assert len(lines(out, "(dryrun) delete")) == 2
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert left == ["logs/old/y.log", "logs/x.log", "with space/ü.txt"]
    aws("s3", "rm", "--recursive", f"s3://{bucket}")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# --- s3api -----------------------------------------------------------------------------

def test_s3api_object_calls(aws, s3, bucket, tmp_path):
    data = os.urandom(300 * KIB + 1)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()

    put = api(aws, "put-object", "--bucket", bucket, "--key", "dir/obj.bin", "--body", str(src),
              "--content-type", "application/x-test", "--metadata", "color=blue")
    assert put["ETag"] == f'"{md5}"'
    assert api(aws, "put-object", "--bucket", bucket, "--key", "dir/empty",
               "--query", "ETag") == '"d41d8cd98f00b204e9800998ecf8427e"'

    head = api(aws, "head-object", "--bucket", bucket, "--key", "dir/obj.bin",
               "--query", "{len: ContentLength, type: ContentType, meta: Metadata, etag: ETag}")
    assert head == {"len": len(data), "type": "application/x-test", "meta": {"color": "blue"},
                    "etag": f'"{md5}"'}

    outfile = tmp_path / "out.bin"
    got = api(aws, "get-object", "--bucket", bucket, "--key", "dir/obj.bin",
              "--range", "bytes=100-199", str(outfile), "--query", "[ContentRange, ContentLength]")
    assert got == [f"bytes 100-199/{len(data)}", 100]
    assert outfile.read_bytes() == data[100:200]
    api(aws, "get-object", "--bucket", bucket, "--key", "dir/obj.bin", str(outfile))
    assert outfile.read_bytes() == data

    copied = api(aws, "copy-object", "--bucket", bucket, "--key", "copy/obj.bin",
                 "--copy-source", f"{bucket}/dir/obj.bin", "--query", "CopyObjectResult.ETag")
    assert copied == f'"{md5}"'
    api(aws, "copy-object", "--bucket", bucket, "--key", "copy/replaced.bin",
        "--copy-source", f"{bucket}/dir/obj.bin", "--metadata-directive", "REPLACE",
        "--content-type", "text/x-new", "--metadata", "color=red")
    head = s3.head_object(Bucket=bucket, Key="copy/replaced.bin")
    assert head["ContentType"] == "text/x-new" and head["Metadata"] == {"color": "red"}

    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"list/{i}", Body=b"x" * i)
    keys = api(aws, "list-objects-v2", "--bucket", bucket, "--prefix", "list/",
               "--query", "Contents[].[Key, Size]")
    assert keys == [[f"list/{i}", i] for i in range(5)]
    page = api(aws, "list-objects-v2", "--bucket", bucket, "--delimiter", "/",
               "--query", "CommonPrefixes[].Prefix")
    assert page == ["copy/", "dir/", "list/"]
    # --max-items pages through with small page sizes underneath
    paged = api(aws, "list-objects-v2", "--bucket", bucket, "--page-size", "2",
                "--query", "Contents[].Key")
    assert paged == sorted(["dir/obj.bin", "dir/empty", "copy/obj.bin", "copy/replaced.bin"]
                           + [f"list/{i}" for i in range(5)])

    deleted = api(aws, "delete-objects", "--bucket", bucket, "--delete",
                  json.dumps({"Objects": [{"Key": f"list/{i}"} for i in range(3)]
                              + [{"Key": "never-was"}]}),
                  "--query", "Deleted[].Key")
    assert sorted(deleted) == ["list/0", "list/1", "list/2", "never-was"]
    quiet = api(aws, "delete-objects", "--bucket", bucket, "--delete",
                json.dumps({"Objects": [{"Key": "list/3"}], "Quiet": True}))
    assert "Deleted" not in (quiet or {})
    left = api(aws, "list-objects-v2", "--bucket", bucket, "--prefix", "list/",
               "--query", "Contents[].Key")
    assert left == ["list/4"]

    missing = aws("s3api", "head-object", "--bucket", bucket, "--key", "nope", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr_text
    nokey = aws("s3api", "get-object", "--bucket", bucket, "--key", "nope",
                str(tmp_path / "x"), check=False)
    assert nokey.returncode != 0 and "NoSuchKey" in nokey.stderr_text


# --- sync ------------------------------------------------------------------------------

SPECIAL = ["with space.txt", "dir with spaces/inner file.bin", "ünïcödé/日本語.dat",
           "ünïcödé/файл.txt", "emoji 🎉/party.txt", "plus+sign.txt", "100% done.txt",
           "a/b/c/d/deep.txt", "q=1&r=2.txt", "tilde~name"]


def make_tree(root, count: int = 1000, seed: int = 7) -> None:
    """``count`` files in nested dirs, sizes 0..300 KiB (mostly small), some odd names."""
    rng = random.Random(seed)
    edge_sizes = [0, 1, 128 * KIB - 1, 128 * KIB, 128 * KIB + 1, 300 * KIB]
    names = list(SPECIAL)
    i = 0
    while len(names) < count:
        depth = rng.randint(0, 3)
        parts = [f"d{rng.randint(0, 6)}" for _ in range(depth)]
        names.append("/".join(parts + [f"f{i:04d}.dat"]))
        i += 1
    for n, name in enumerate(names):
        if n < len(edge_sizes):
            size = edge_sizes[n]
        else:
            roll = rng.random()
            size = (rng.randint(0, 4 * KIB) if roll < 0.6 else
                    rng.randint(4 * KIB, 64 * KIB) if roll < 0.92 else
                    rng.randint(64 * KIB, 300 * KIB))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def test_sync_thousand_files_round_trip(aws, s3, bucket, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    expected = tree_digests(src)
    assert len(expected) == 1000
    target = f"s3://{bucket}/tree/"

    up = aws("s3", "sync", "--no-progress", "src", target)
    uploads = lines(up, "upload")
    assert len(uploads) == 1000, up.stdout_text[-2000:] + up.stderr_text
    assert s3.list_objects_v2(Bucket=bucket, Prefix="tree/", MaxKeys=1)["IsTruncated"]
    listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="tree/") for o in page.get("Contents", [])]
    assert sorted(listed) == sorted("tree/" + k for k in expected)

    down = aws("s3", "sync", "--no-progress", target, "dst")
    assert len(lines(down, "download")) == 1000, down.stdout_text[-2000:] + down.stderr_text
    assert tree_digests(dst) == expected  # every file, byte for byte

    # nothing changed: a second sync each way transfers nothing
    again_up = aws("s3", "sync", "--no-progress", "src", target)
    assert not lines(again_up, "upload"), again_up.stdout_text[:2000]
    again_down = aws("s3", "sync", "--no-progress", target, "dst")
    assert not lines(again_down, "download"), again_down.stdout_text[:2000]
    assert not lines(aws("s3", "sync", "--no-progress", "dst", target), "upload")

    # one file changes: exactly that one goes up, then comes down
    changed = "ünïcödé/日本語.dat"
    time.sleep(1.1)  # make the local mtime clearly newer than the object's LastModified
    (src / changed).write_bytes(b"new content " * 1000)
    up = aws("s3", "sync", "--no-progress", "src", target)
    assert lines(up, "upload") == [f"upload: src/{changed} to {target}{changed}"]
    assert s3.get_object(Bucket=bucket, Key=f"tree/{changed}")["Body"].read() == \
        b"new content " * 1000
    down = aws("s3", "sync", "--no-progress", target, "dst")
    assert lines(down, "download") == [f"download: {target}{changed} to dst/{changed}"]
    assert tree_digests(dst) == tree_digests(src)

    # a file removed locally: --delete removes exactly that object
    os.remove(src / "with space.txt")
    out = aws("s3", "sync", "--no-progress", "--delete", "src", target)
    assert lines(out, "delete") == [f"delete: {target}with space.txt"]
    assert not lines(out, "upload")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="tree/with space.txt")["KeyCount"] == 0
