"""The S3 HTTP API over the storage engine.

``Gateway(store, GatewayConfig(credentials={...})).app()`` is an aiohttp
application serving S3 (path and virtual-hosted style, SigV4 in headers, query
strings and aws-chunked bodies) plus Basalt's ``/_basalt/`` endpoints.

The package imports its application on first use of these names only: the CLI
signs admin requests with ``gateway.sigv4`` and must not pay ~0.5 s for aiohttp
and the whole gateway on every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway
    from .request import GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]


def __getattr__(name: str) -> Any:
    if name == "Gateway":
        from .app import Gateway
        return Gateway
    if name == "GatewayConfig":
        from .request import GatewayConfig
        return GatewayConfig
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
