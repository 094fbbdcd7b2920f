"""Small files that claim huge images ("decompression bombs"), made in well under a second and
without ever holding the decoded pixels: a block of zero rows is deflated once (ending in a full
flush, so the compressed block stands alone) and repeated."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _zero_rows_zlib(row_bytes: int, rows: int, rows_per_block: int = 256) -> bytes:
    """zlib stream of `rows` rows of `row_bytes` zero bytes (PNG filter byte included)."""
    block = b"\x00" * (row_bytes * rows_per_block)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the wrapper is added here
    packed = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(rows, rows_per_block)
    checksum = 1
    for _ in range(full):
        checksum = zlib.adler32(block, checksum)
    tail = b"\x00" * (row_bytes * rest)
    checksum = zlib.adler32(tail, checksum)
    finish = zlib.compressobj(9, zlib.DEFLATED, -15)
    ending = finish.compress(tail) + finish.flush()
    return b"\x78\xda" + packed * full + ending + struct.pack(">I", checksum)


def grey_png_bomb(side: int = 19000) -> bytes:
    """A valid all-black 8-bit grey PNG of side x side pixels (19000: 361 MP in about 351 KB)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    data = _zero_rows_zlib(side + 1, side)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def write_grey_png_bomb(path: Path, side: int = 19000) -> Path:
    path.write_bytes(grey_png_bomb(side))
    return path
