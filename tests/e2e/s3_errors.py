"""Asserting S3 error codes from boto3 calls (shared by the e2e tests)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def code(err: pytest.ExceptionInfo) -> str:
    """The S3 error code of a caught ClientError."""
    return err.value.response["Error"]["Code"]


def refused(expected: str, call, **kwargs) -> ClientError:
    """Call ``call(**kwargs)``; it must fail with the S3 error code ``expected``."""
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    assert code(err) == expected, err.value.response
    return err.value
