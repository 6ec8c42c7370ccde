"""Logstream's shared core: channels, records, identities, settings, errors, the NATS link.

Import from the submodules (``from logstream.shared.channels import parse_channel``); this package states
which of them are public.
"""

__all__ = [
    "channels",
    "durations",
    "embedded_nats",
    "errors",
    "identities",
    "ingest_client",
    "nats_link",
    "records",
    "settings",
    "sse",
    "structured_logging",
    "web",
]
