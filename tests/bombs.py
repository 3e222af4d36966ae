"""Decompression bombs for the tests and the abuse benchmark (bench/load.py): tiny files whose
headers claim huge images (what a hostile client sends to exhaust a server's memory)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG of width x height black pixels (1-bit grey) in a few dozen KB; decoded as
    RGB it is width x height x 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bomb_jpeg(width: int = 20000, height: int = 20000) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height: a decoder that trusts it
    allocates the whole frame before it finds the data missing."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
