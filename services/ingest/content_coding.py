"""Compressed request bodies: ``Content-Encoding`` gzip, deflate and zstd.

Shippers compress by default (Vector, Fluent Bit, the OpenTelemetry exporters), and one that is
answered 400 for a gzip body drops the batch. Every ingest HTTP route reads its body through
``read_decoded``:

- ``identity`` (or no header) is the body as sent; ``gzip`` (and ``x-gzip``), ``deflate`` (zlib,
  or a raw deflate stream as some clients send it) and ``zstd`` are decompressed; anything else
  is 415 naming these. One coding per request: a list such as ``gzip, zstd`` is 415 too.
- Every limit applies to the decompressed bytes, and is enforced while decompressing: output is
  produced in bounded steps (about ``STEP_BYTES``), and the first step past the limit ends the
  request with 413, so a small body that inflates to gigabytes costs a bounded amount of memory
  and time. The compressed body itself may be at most a little over the limit (incompressible
  data grows a little when compressed).
- A body that is not valid data of its coding (truncated, corrupt, another coding) is 400,
  naming the coding.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import zstandard

from logstream.shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["CODINGS", "coding_of", "compressed_limit", "decode", "is_identity", "read_decoded"]

# The codings a client may send, as named in Content-Encoding (x-gzip is gzip's old name).
CODINGS = ("gzip", "deflate", "zstd", "identity")
_ALIASES = {"x-gzip": "gzip"}
# Output is produced in steps of at most this many bytes: what decompressing may hold at once
# beyond the body itself.
STEP_BYTES = 256 * 1024


def _named(header: str | None) -> str:
    value = (header or "identity").strip().lower()
    return _ALIASES.get(value, value)


def is_identity(header: str | None) -> bool:
    """Whether the body comes as it is (no header, or ``identity``): its length is its size."""
    return _named(header) == "identity"


def coding_of(header: str | None) -> str:
    """The one coding a ``Content-Encoding`` header names; 415 for any other."""
    value = _named(header)
    if value in CODINGS:
        return value
    shown = repr(header[:80]) if header else "none"
    raise UnsupportedMediaType(
        f"content encoding {shown} is not accepted; send one of {', '.join(CODINGS)}"
    )


def compressed_limit(limit: int) -> int:
    """The most compressed bytes read for a ``limit`` of decompressed ones."""
    return limit + limit // 64 + 1024


def _too_large(limit: int, coding: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"body is over the limit of {limit} bytes once decompressed ({coding})")


def _corrupt(coding: str, why: object) -> InvalidRequest:
    return InvalidRequest(f"body is not valid {coding} data: {why}")


def _zlib_wbits(coding: str, body: bytes) -> int:
    """gzip; or deflate as HTTP means it (a zlib stream), or a raw deflate stream (no zlib
    header), which some clients send."""
    if coding == "gzip":
        return 16 + zlib.MAX_WBITS
    zlib_header = (
        len(body) >= 2
        and body[0] & 0x0F == 8
        and body[0] >> 4 <= 7
        and int.from_bytes(body[:2]) % 31 == 0
    )
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _inflate(body: bytes, coding: str, limit: int) -> bytes:
    out = bytearray()
    data = body
    try:
        while True:  # gzip: one member after another (a body may hold several)
            inflate = zlib.decompressobj(_zlib_wbits(coding, data))
            while data and not inflate.eof:
                out += inflate.decompress(data, STEP_BYTES)  # at most one step per call
                if len(out) > limit:
                    raise _too_large(limit, coding)
                data = inflate.unconsumed_tail
            out += inflate.flush()
            if not inflate.eof:
                raise _corrupt(coding, "the compressed stream ends early (truncated?)")
            data = inflate.unused_data
            if coding == "gzip" and data.startswith(b"\x1f\x8b"):
                continue
            if data.strip(b"\0"):
                raise _corrupt(coding, "data after the end of the compressed stream")
            break
    except zlib.error as exc:
        raise _corrupt(coding, exc) from None
    if len(out) > limit:
        raise _too_large(limit, coding)
    return bytes(out)


# zstd's output cannot be bounded per call, only by what goes in: one block of a few bytes can
# stand for 128 KiB, so input goes in pieces small enough to keep a step near STEP_BYTES.
_ZSTD_PIECE = 64


def _unzstd(body: bytes, coding: str, limit: int) -> bytes:
    out = bytearray()
    if not body:
        raise _corrupt(coding, "the body is empty")
    data = body
    try:
        while data:  # one frame after another (a body may hold several)
            frame = zstandard.ZstdDecompressor().decompressobj()
            for at in range(0, len(data), _ZSTD_PIECE):
                out += frame.decompress(data[at : at + _ZSTD_PIECE])
                if len(out) > limit:
                    raise _too_large(limit, coding)
                if frame.eof:
                    break
            if not frame.eof:
                raise _corrupt(coding, "the compressed stream ends early (truncated?)")
            data = frame.unused_data
    except zstandard.ZstdError as exc:
        raise _corrupt(coding, exc) from None
    return bytes(out)


def decode(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` decompressed as ``coding`` says, at most ``limit`` bytes (413 past it, 400 for
    data that is not of its coding)."""
    if coding == "identity":
        if len(body) > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        return body
    if coding == "zstd":
        return _unzstd(body, coding, limit)
    return _inflate(body, coding, limit)


async def read_decoded(chunks: AsyncIterator[bytes], header: str | None, limit: int) -> bytes:
    """The request body, decompressed as its ``Content-Encoding`` says, at most ``limit`` bytes
    (413 past it, 415 for a coding not taken, 400 for data that is not of its coding)."""
    coding = coding_of(header)
    cap = limit if coding == "identity" else compressed_limit(limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > cap:
            what = "body" if coding == "identity" else "compressed body"
            raise PayloadTooLarge(f"{what} is over the limit of {cap} bytes")
    return decode(bytes(body), coding, limit)
