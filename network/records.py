"""The records Basalt keeps about networks, address reservations and taps.

They are plain frozen dataclasses serialised as JSON: the admin API can return
`as_dict()` as is, and a record written by one version stays readable by the
next (unknown keys are ignored on load).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from .addressing import SubnetLayout, parse_subnet

T = TypeVar("T", bound="_Record")


class _Record:
    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def dumps(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True).encode()

    @classmethod
    def loads(cls: type[T], raw: bytes) -> T:
        data = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Network(_Record):
    """A Basalt network: a bridge carrying `subnet`, its gateway and DHCP range."""

    name: str
    subnet: str
    bridge: str
    gateway: str
    dhcp_start: str
    dhcp_end: str
    nat: bool
    created_at: float

    @property
    def layout(self) -> SubnetLayout:
        return parse_subnet(self.subnet)

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.rsplit("/", 1)[1])


@dataclass(frozen=True)
class Reservation(_Record):
    """A static address: `owner` (e.g. a VM) gets `ip` for `mac` on `network`."""

    network: str
    owner: str
    mac: str
    ip: str


@dataclass(frozen=True)
class Tap(_Record):
    """A tap device `name` attached to `network`'s bridge on behalf of `owner`."""

    network: str
    owner: str
    name: str
