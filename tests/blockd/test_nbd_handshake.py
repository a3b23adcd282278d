"""Option haggling, driven from a raw socket: the spec's edge cases."""

from __future__ import annotations

import struct

import pytest
from nbd_helpers import wait_until

from blockd import protocol as p
from blockd.export import NBDError

MiB = 1024 * 1024


def infos(replies):
    """{info type: payload} of the NBD_REP_INFO replies."""
    return {
        p.S_U16.unpack(data[:2])[0]: data[2:] for rtype, data in replies if rtype == p.REP_INFO
    }


def test_greeting_advertises_fixed_newstyle_and_no_zeroes(client):
    c = client(greet=False)
    assert c.greet() == p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES


def test_unknown_client_flags_drop_the_connection(client):
    c = client(greet=False)
    c.greet(client_flags=1 << 7)
    assert c.is_closed()


def test_bad_option_magic_drops_the_connection(client):
    c = client()
    c.send(struct.pack(">QII", 0x1234, p.OPT_LIST, 0))
    assert c.is_closed()


def test_unknown_option_is_unsupported_and_connection_stays_usable(client):
    c = client()
    c.option(0x4242, b"some data the server must skip")
    _, rtype, message = c.reply()
    assert rtype == p.REP_ERR_UNSUP and message
    for option in (p.OPT_STARTTLS, p.OPT_EXTENDED_HEADERS, p.OPT_PEEK_EXPORT):
        assert c.request_option(option)[-1][0] == p.REP_ERR_UNSUP
    assert c.go("disk")["size"] == 64 * MiB


def test_list_names_every_export(client, make_export):
    extra = make_export()
    c = client()
    replies = c.request_option(p.OPT_LIST)
    assert replies[-1][0] == p.REP_ACK
    names = []
    for rtype, data in replies[:-1]:
        assert rtype == p.REP_SERVER
        (n,) = p.S_U32.unpack(data[:4])
        names.append((data[4 : 4 + n].decode(), data[4 + n :].decode()))
    assert {("disk", "scratch disk"), ("ro", "read-only test export"), (extra.name, "")} <= set(names)


def test_list_with_data_is_invalid(client):
    c = client()
    assert c.request_option(p.OPT_LIST, b"x")[-1][0] == p.REP_ERR_INVALID
    assert c.request_option(p.OPT_LIST)[-1][0] == p.REP_ACK


def test_info_reports_export_name_description_and_block_size(client):
    c = client()
    replies = c.request_option(
        p.OPT_INFO, c.info_data("ro", (p.INFO_NAME, p.INFO_DESCRIPTION, p.INFO_BLOCK_SIZE))
    )
    assert replies[-1][0] == p.REP_ACK
    info = infos(replies)
    size, flags = struct.unpack(">QH", info[p.INFO_EXPORT])
    assert size == 8 * MiB
    assert flags & p.FLAG_HAS_FLAGS and flags & p.FLAG_READ_ONLY
    assert not flags & (p.FLAG_SEND_TRIM | p.FLAG_SEND_WRITE_ZEROES | p.FLAG_SEND_FUA)
    assert info[p.INFO_NAME] == b"ro"
    assert info[p.INFO_DESCRIPTION] == b"read-only test export"
    assert struct.unpack(">III", info[p.INFO_BLOCK_SIZE]) == (1, 4096, 32 * MiB)
    # INFO does not end the handshake.
    assert c.request_option(p.OPT_LIST)[-1][0] == p.REP_ACK


def test_info_export_is_sent_even_when_not_requested(client):
    c = client()
    replies = c.request_option(p.OPT_INFO, c.info_data("disk"))
    info = infos(replies)
    assert p.INFO_EXPORT in info and p.INFO_NAME not in info and p.INFO_DESCRIPTION not in info


def test_empty_name_is_the_default_export(client):
    c = client()
    info = infos(c.request_option(p.OPT_INFO, c.info_data("", (p.INFO_NAME,))))
    assert info[p.INFO_NAME] == b"disk"


def test_unknown_export_is_refused_and_client_may_retry(client):
    c = client()
    replies = c.request_option(p.OPT_GO, c.info_data("no-such-volume"))
    assert replies == [(p.REP_ERR_UNKNOWN, b"no export named 'no-such-volume'")]
    assert c.request_option(p.OPT_INFO, c.info_data("nope"))[-1][0] == p.REP_ERR_UNKNOWN
    assert c.go("disk")["size"] == 64 * MiB


@pytest.mark.parametrize(
    "data",
    [
        b"",  # shorter than name length + info count
        struct.pack(">I", 100) + b"disk" + struct.pack(">H", 0),  # name overruns
        struct.pack(">I", 4) + b"disk" + struct.pack(">H", 2) + struct.pack(">H", 3),  # 1 of 2 infos
        struct.pack(">I", 4) + b"disk" + struct.pack(">H", 0) + b"junk",  # trailing bytes
        struct.pack(">I", 2) + b"\xff\xfe" + struct.pack(">H", 0),  # not UTF-8
    ],
)
def test_malformed_info_is_invalid_and_connection_stays_usable(client, data):
    c = client()
    assert c.request_option(p.OPT_INFO, data)[-1][0] == p.REP_ERR_INVALID
    assert c.go("disk")["size"] == 64 * MiB


def test_export_name_longer_than_4096_is_refused(client):
    c = client()
    assert c.request_option(p.OPT_GO, c.info_data("x" * 5000))[-1][0] == p.REP_ERR_TOO_BIG


def test_oversized_option_is_drained_and_refused(client):
    c = client()
    c.option(p.OPT_INFO, b"\0" * (100 * 1024))
    assert c.replies()[-1][0] == p.REP_ERR_TOO_BIG
    assert c.go("disk")["size"] == 64 * MiB


def test_absurd_option_length_drops_the_connection(client):
    c = client()
    c.option(p.OPT_GO, length=0xFFFFFFF0)
    assert c.is_closed()


def test_abort_is_acknowledged_then_closed(client):
    c = client()
    assert c.request_option(p.OPT_ABORT) == [(p.REP_ACK, b"")]
    assert c.is_closed()


def test_structured_reply_rejects_data(client):
    c = client()
    assert c.request_option(p.OPT_STRUCTURED_REPLY, b"x")[-1][0] == p.REP_ERR_INVALID
    assert c.request_option(p.OPT_STRUCTURED_REPLY)[-1][0] == p.REP_ACK


def test_set_meta_context_needs_structured_replies(client):
    c = client()
    data = c.meta_data("disk", [p.META_BASE_ALLOCATION])
    assert c.request_option(p.OPT_SET_META_CONTEXT, data)[-1][0] == p.REP_ERR_INVALID


def test_set_meta_context_selects_base_allocation_only(client):
    c = client()
    c.request_option(p.OPT_STRUCTURED_REPLY)
    data = c.meta_data("disk", ["x-unknown:thing", "base:", "base:nope", p.META_BASE_ALLOCATION])
    replies = c.request_option(p.OPT_SET_META_CONTEXT, data)
    assert [r for r, _ in replies] == [p.REP_META_CONTEXT, p.REP_ACK]
    assert replies[0][1][4:] == b"base:allocation"
    # Unknown namespaces and leaves are ignored, not errors.
    data = c.meta_data("disk", ["qemu:dirty-bitmap:x", "base:nope"])
    assert c.request_option(p.OPT_SET_META_CONTEXT, data) == [(p.REP_ACK, b"")]


@pytest.mark.parametrize("queries", [[], ["base:"], [p.META_BASE_ALLOCATION]])
def test_list_meta_context(client, queries):
    c = client()
    c.request_option(p.OPT_STRUCTURED_REPLY)
    replies = c.request_option(p.OPT_LIST_META_CONTEXT, c.meta_data("disk", queries))
    assert replies == [(p.REP_META_CONTEXT, b"\0\0\0\0base:allocation"), (p.REP_ACK, b"")]


def test_meta_context_for_unknown_export(client):
    c = client()
    c.request_option(p.OPT_STRUCTURED_REPLY)
    data = c.meta_data("nope", [p.META_BASE_ALLOCATION])
    assert c.request_option(p.OPT_SET_META_CONTEXT, data)[-1][0] == p.REP_ERR_UNKNOWN


def test_truncated_meta_context_query_is_invalid(client):
    c = client()
    c.request_option(p.OPT_STRUCTURED_REPLY)
    data = c.meta_data("disk", [p.META_BASE_ALLOCATION])[:-3]
    assert c.request_option(p.OPT_SET_META_CONTEXT, data)[-1][0] == p.REP_ERR_INVALID


@pytest.mark.parametrize("no_zeroes", [True, False])
def test_export_name_enters_transmission(client, no_zeroes):
    flags = p.FLAG_C_FIXED_NEWSTYLE | (p.FLAG_C_NO_ZEROES if no_zeroes else 0)
    c = client(greet=False)
    c.greet(flags)
    c.option(p.OPT_EXPORT_NAME, b"disk")
    size, tflags = struct.unpack(">QH", c.recv(10))
    assert size == 64 * MiB and tflags & p.FLAG_HAS_FLAGS
    if not no_zeroes:
        assert c.recv(124) == bytes(124)
    c.request(p.CMD_FLUSH, 7)
    assert c.simple_reply() == (7, 0, b"")


def test_export_name_unknown_hangs_up(client):
    c = client()
    c.option(p.OPT_EXPORT_NAME, b"missing")
    assert c.is_closed()


def test_go_sends_no_padding_and_flags_follow_the_export(client):
    c = client()
    result = c.go("disk", infos=(p.INFO_BLOCK_SIZE,))
    flags = result["flags"]
    for flag in (
        p.FLAG_SEND_FLUSH, p.FLAG_SEND_FUA, p.FLAG_SEND_TRIM, p.FLAG_SEND_WRITE_ZEROES,
        p.FLAG_SEND_FAST_ZERO, p.FLAG_CAN_MULTI_CONN, p.FLAG_SEND_CACHE, p.FLAG_SEND_DF,
    ):
        assert flags & flag, hex(flag)
    assert not flags & p.FLAG_READ_ONLY
    c.request(p.CMD_FLUSH, 1)
    assert c.reply_error() == (1, 0)


def test_export_without_capabilities_advertises_none(client, make_export):
    bare = make_export(
        can_flush=False, can_fua=False, can_trim=False, can_zero=False,
        can_fast_zero=False, can_cache=False, can_multi_conn=False,
    )
    c = client()
    flags = c.go(bare.name, structured=False)["flags"]
    assert flags == p.FLAG_HAS_FLAGS


def test_open_failure_is_reported_and_close_balances_open(client, make_export):
    export = make_export()
    export.fail["open"] = NBDError(1, "volume is attached elsewhere")
    c = client()
    replies = c.request_option(p.OPT_GO, c.info_data(export.name))
    assert replies[-1][0] == p.REP_ERR_POLICY and b"attached elsewhere" in replies[-1][1]
    del export.fail["open"]
    c.go(export.name)
    c.request(p.CMD_DISC, 0)
    assert c.is_closed()
    assert export.opened == 1
    wait_until(lambda: export.closed == 1)
