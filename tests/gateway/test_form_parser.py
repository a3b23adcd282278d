"""gateway.form_data: multipart/form-data read as a stream (POST Object)."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.form_data import (
    MAX_PRE_DATA,
    FormReader,
    MalformedPOSTRequest,
    MaxPostPreDataLengthExceeded,
    boundary_of,
)

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


class Chunked:
    """A body handed out in chunks of the given sizes (then whatever is left)."""

    def __init__(self, body: bytes, sizes: list[int] | None = None) -> None:
        self.body, self.sizes, self.reads = body, list(sizes or []), 0

    async def readany(self) -> bytes:
        size = self.sizes.pop(0) if self.sizes else len(self.body)
        chunk, self.body = self.body[:size], self.body[size:]
        self.reads += 1
        return chunk


def part(name: str, value: bytes, filename: str | None = None, headers: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"'
                                                 if filename is not None else "")
    return (b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
            + headers.encode() + b"\r\n" + value + b"\r\n")


def body(*parts: bytes, end: bytes = b"--" + BOUNDARY + b"--\r\n") -> bytes:
    return b"".join(parts) + end


async def read(data: bytes, sizes: list[int] | None = None, **kwargs):
    reader = FormReader(Chunked(data, sizes), BOUNDARY, **kwargs)
    form = await reader.read_form()
    content = b""
    if form.has_file:
        content = b"".join([chunk async for chunk in reader.file()])
    return reader, form, content


def run(coro):
    return asyncio.run(coro)


def test_fields_then_the_file_streamed_whole():
    data = body(part("key", b"a/${filename}"), part("Content-Type", b"text/plain"),
                part("file", b"hello\r\nworld", filename="h.txt",
                     headers="Content-Type: application/octet-stream\r\n"))
    reader, form, content = run(read(data))
    assert form.fields == (("key", "a/${filename}"), ("Content-Type", "text/plain"))
    assert form.has_file and form.filename == "h.txt"
    assert content == b"hello\r\nworld" and reader.file_size == 12 and reader.file_complete


@pytest.mark.parametrize("size", [1, 2, 3, 7, 41, 42, 43, 1000])
def test_any_chunking_gives_the_same_form_and_bytes(size):
    payload = bytes(random.Random(size).randrange(256) for _ in range(5000))
    # Bytes that look like the boundary's start, inside the file and a field.
    tricky = b"\r\n--" + BOUNDARY[:-1] + b"x\r\n--\r\n"
    data = body(part("key", b"k" + tricky), part("file", tricky + payload + tricky, "f.bin"),
                part("after", b"ignored"))
    sizes = [size] * (len(data) // size + 1)
    reader, form, content = run(read(data, sizes))
    assert form.fields == (("key", "k" + tricky.decode()),)
    assert content == tricky + payload + tricky


def test_the_file_is_handed_out_as_it_arrives_not_buffered():
    payload = b"x" * (1 << 20)
    data = body(part("key", b"k"), part("file", payload, "big"))
    stream = Chunked(data, [200] + [65536] * 40)
    reader = FormReader(stream, BOUNDARY)

    async def go():
        await reader.read_form()
        sizes = []
        async for chunk in reader.file():
            sizes.append(len(chunk))
            assert len(reader._buf) < 70000  # never more than one read held back
        return sizes
    sizes = run(go())
    assert sum(sizes) == len(payload) and len(sizes) > 10


def test_the_file_field_anywhere_and_fields_after_it_ignored():
    data = body(part("file", b"data", "x"), part("key", b"late"), part("policy", b"p"))
    reader, form, content = run(read(data))
    assert form.fields == () and content == b"data"
    data = body(part("a", b"1"), part("FILE", b"upper", "y"), part("b", b"2"))
    _, form, content = run(read(data))
    assert form.fields == (("a", "1"),) and content == b"upper" and form.filename == "y"


def test_a_file_without_filename_and_other_parts_with_one():
    data = body(part("photo", b"not the file", filename="p.png"), part("file", b"content"))
    _, form, content = run(read(data))
    assert form.fields == (("photo", "not the file"),)
    assert form.has_file and form.filename is None and content == b"content"


def test_a_form_without_file():
    _, form, _ = run(read(body(part("key", b"k"))))
    assert form.fields == (("key", "k"),) and not form.has_file


def test_discard_rest_reads_what_follows_up_to_a_limit():
    data = body(part("file", b"d", "x"), part("tail", b"t" * 5000))
    reader, _, _ = run(read(data, [100] * 100))
    assert run(reader.discard_rest(10000)) is True
    reader, _, _ = run(read(data, [100] * 100))
    assert run(reader.discard_rest(1000)) is False


def test_preamble_transport_padding_and_quoted_names():
    data = (b"this is a preamble\r\n" + b"--" + BOUNDARY + b"  \t\r\n"
            + b'Content-Disposition: form-data; name="x-amz-meta-a\\"b"\r\n\r\nv\r\n'
            + b"--" + BOUNDARY + b"\r\ncontent-disposition: FORM-DATA; name=file; "
            + b"filename*=UTF-8''na%C3%AFve.txt; filename=\"naive.txt\"\r\n\r\nz\r\n"
            + b"--" + BOUNDARY + b"--")
    _, form, content = run(read(data))
    assert form.fields == (('x-amz-meta-a"b', "v"),)
    assert form.filename == "naïve.txt" and content == b"z"


def test_utf8_values():
    data = body(part("x-amz-meta-name", "Ünïcødé — ✓".encode()), part("file", b"", "é.txt"))
    _, form, content = run(read(data))
    assert form.fields == (("x-amz-meta-name", "Ünïcødé — ✓"),)
    assert form.filename == "é.txt" and content == b""


@pytest.mark.parametrize("data", [
    b"",                                                      # no body
    b"garbage without any boundary at all",                   # never a boundary
    b"--" + BOUNDARY + b"\r\n\r\nvalue\r\n--" + BOUNDARY + b"--",  # part without headers
    b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\nv\r\n--" + BOUNDARY + b"--",
    b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n",
    b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data\r\n\r\nv\r\n",
    b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nv\r\n",
    b"--" + BOUNDARY + b"junk\r\n",                           # text after the boundary
    part("key", b"k") + b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=key",
    part("key", b"unterminated"),                             # ends inside the form
])
def test_malformed_bodies(data):
    with pytest.raises(MalformedPOSTRequest):
        run(read(data))


def test_a_truncated_file_is_malformed():
    data = part("file", b"the file never ends", "f")[:-2]
    reader = FormReader(Chunked(data), BOUNDARY)

    async def go():
        await reader.read_form()
        return [chunk async for chunk in reader.file()]
    with pytest.raises(MalformedPOSTRequest):
        run(go())
    assert not reader.file_complete


def test_fields_before_the_file_are_bounded():
    small = body(part("x-amz-meta-pad", b"p" * (MAX_PRE_DATA - 400)), part("file", b"ok", "f"))
    assert run(read(small))[2] == b"ok"
    big = body(part("x-amz-meta-pad", b"p" * MAX_PRE_DATA), part("file", b"f", "f"))
    with pytest.raises(MaxPostPreDataLengthExceeded) as err:
        run(read(big, [1000] * 100))
    assert err.value.extra == {"MaxPostPreDataLengthBytes": str(MAX_PRE_DATA)}
    with pytest.raises(MaxPostPreDataLengthExceeded):
        run(read(big))  # all in one read
    endless = Chunked(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n"
                      + b"v" * (1 << 24), [4096] * 5000)
    with pytest.raises(MaxPostPreDataLengthExceeded):
        run(FormReader(endless, BOUNDARY).read_form())
    assert endless.reads < 10  # gave up early, did not read 16 MiB
    many = body(*[part(f"f{i}", b"v" * 10) for i in range(1000)])  # no file, too long
    with pytest.raises(MaxPostPreDataLengthExceeded):
        run(read(many))


@pytest.mark.parametrize("content_type,expected", [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; charset=utf-8; boundary="a b;c"', b"a b;c"),
    ("Multipart/Form-Data;BOUNDARY=xyz", b"xyz"),
])
def test_boundary_of(content_type, expected):
    assert boundary_of(content_type) == expected


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=\"\"",
    "multipart/form-data; boundary=" + "x" * 300, "multipart/form-data; boundary=ünï",
])
def test_boundary_missing_or_bad(content_type):
    with pytest.raises(MalformedPOSTRequest):
        boundary_of(content_type)
