"""ServerSideEncryptionConfiguration documents: parsed and refused as S3 does,
rendered back, and the default a write without SSE headers gets."""

import json

import pytest

from gateway.bucket_encryption import default_encryption, parse_encryption, render_encryption
from gateway.errors import InvalidArgument, MalformedXML

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def doc(apply: str, extra: str = "") -> bytes:
    return (f"<ServerSideEncryptionConfiguration {NS}><Rule><ApplyServerSideEncryptionByDefault>"
            f"{apply}</ApplyServerSideEncryptionByDefault>{extra}</Rule>"
            f"</ServerSideEncryptionConfiguration>").encode()


def test_parse_and_render_round_trip():
    for body, want in [
        (doc("<SSEAlgorithm>AES256</SSEAlgorithm>"), ("AES256", None, False)),
        (doc("<SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>alias/k</KMSMasterKeyID>",
             "<BucketKeyEnabled>true</BucketKeyEnabled>"), ("aws:kms", "alias/k", True)),
        (doc("<SSEAlgorithm>aws:kms</SSEAlgorithm>"), ("aws:kms", None, False)),
    ]:
        got = parse_encryption(body)
        assert got == want
        assert parse_encryption(render_encryption(*got)) == want


@pytest.mark.parametrize("body", [
    b"", b"<nope/>", doc("<SSEAlgorithm>AES128</SSEAlgorithm>"), doc(""),
    doc("<SSEAlgorithm>AES256</SSEAlgorithm><Other>x</Other>"),
    doc("<SSEAlgorithm>AES256</SSEAlgorithm>", "<BucketKeyEnabled>maybe</BucketKeyEnabled>"),
    doc("<SSEAlgorithm>AES256</SSEAlgorithm>").replace(b"</Rule>", b"</Rule><Rule/>"),
])
def test_malformed(body):
    with pytest.raises(MalformedXML):
        parse_encryption(body)


def test_kms_key_with_aes256_refused():
    with pytest.raises(InvalidArgument, match="KMSMasterKeyID"):
        parse_encryption(doc("<SSEAlgorithm>AES256</SSEAlgorithm>"
                             "<KMSMasterKeyID>k</KMSMasterKeyID>"))


def test_default_for_writes():
    assert default_encryption(None) is None
    assert default_encryption(json.dumps(["AES256", None, False]).encode()).mode == "AES256"
    got = default_encryption(json.dumps(["aws:kms", "alias/k", True]).encode())
    assert (got.mode, got.kms_key, got.bucket_key) == ("aws:kms", "alias/k", True)
