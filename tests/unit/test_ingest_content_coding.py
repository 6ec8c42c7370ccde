"""services/ingest/content_coding.py: which codings are taken, and decoding to the byte at the
limit (the real ingest is driven in tests/integration/test_ingest_compression.py)."""

from __future__ import annotations

import gzip
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.services.ingest.content_coding import coding_of, compressed_limit, decode
from logstream.shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

COMPRESS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "identity": lambda data: data,
}


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("gzip", "gzip"),
        (" GZIP ", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
        ("zstd", "zstd"),
    ],
)
def test_the_codings_taken(header, coding):
    assert coding_of(header) == coding


@pytest.mark.parametrize("header", ["br", "gzip, zstd", "compress", "gzip;q=1"])
def test_any_other_coding_is_a_415_that_names_the_ones_taken(header):
    with pytest.raises(UnsupportedMediaType) as refused:
        coding_of(header)
    assert "gzip, deflate, zstd, identity" in refused.value.message


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4096), coding=st.sampled_from(sorted(COMPRESS)))
def test_whatever_is_compressed_decodes_to_itself(data, coding):
    assert decode(COMPRESS[coding](data), coding, 4096) == data


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_the_limit_is_on_the_decompressed_bytes_to_the_byte(coding):
    exact = b"a" * 10_000
    assert decode(COMPRESS[coding](exact), coding, 10_000) == exact
    with pytest.raises(PayloadTooLarge):
        decode(COMPRESS[coding](exact + b"a"), coding, 10_000)


def test_several_gzip_members_or_zstd_frames_are_one_body():
    assert decode(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"
    frames = zstandard.ZstdCompressor().compress(b"ab") + zstandard.ZstdCompressor().compress(b"c")
    assert decode(frames, "zstd", 100) == b"abc"


def test_an_empty_zstd_body_is_not_a_body():
    with pytest.raises(InvalidRequest, match="empty"):
        decode(b"", "zstd", 100)


def test_the_compressed_body_may_be_a_little_over_the_limit_no_more():
    # incompressible bytes grow a little when compressed
    limit = 1 << 20
    assert compressed_limit(limit) >= len(gzip.compress(bytes(range(256)) * 4096, 9))
    assert compressed_limit(limit) < limit * 1.05
