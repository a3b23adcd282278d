"""The S3 HTTP API over the storage engine.

``Gateway(store, GatewayConfig(credentials={...})).app()`` is an aiohttp
application serving S3 (path and virtual-hosted style, SigV4 in headers, query
strings and aws-chunked bodies) plus Basalt's ``/_basalt/`` endpoints.
"""

from .app import Gateway
from .request import GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]
