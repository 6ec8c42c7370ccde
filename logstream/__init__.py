"""Logstream: real-time log streaming over Server-Sent Events, backed by NATS JetStream."""

__version__ = "0.1.0"
__all__ = ["__version__"]
