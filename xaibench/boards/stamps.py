"""A study picture's stamp: what it was drawn from (the result rows, the board code, matplotlib's
version), kept in a text chunk of the PNG itself. A warm run writes the same rows again and again:
with the stamp unchanged the picture is kept rather than redrawn, which would cost an import of
matplotlib and a render (~1 s on the quickstart). Any change of rows, code or matplotlib redraws.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from importlib import metadata
from pathlib import Path

import pandas as pd

KEYWORD = b"xaibench-drawn-from"
SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The code that turns rows into a picture: every board module, the statistics they call and the
# sanity thresholds (gate_schema.SANITY_PASS) the sanity picture draws.
CODE = sorted(Path(__file__).parent.glob("*.py")) + [
    Path(__file__).parent.parent / name for name in ("stats.py", "gate_schema.py")
]


def of(rows: pd.DataFrame) -> str:
    """The stamp of a picture of ``rows`` (the same for every study: each study's picture is its
    own file)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(f"{c}:{t}" for c, t in rows.dtypes.items()).encode())
    digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    for path in CODE:
        digest.update(path.read_bytes())
    digest.update(metadata.version("matplotlib").encode())  # a dependency: never missing
    return digest.hexdigest()


def _chunks(data: bytes):
    """(type, data) of each chunk of a PNG, until the image data starts (text chunks come before)."""
    offset = len(SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            return
        yield kind, data[offset + 8 : offset + 8 + length]
        offset += 12 + length


def read(path: Path) -> str | None:
    """The stamp written into the PNG at ``path``; None for a missing, foreign or unstamped file."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(SIGNATURE):
        return None
    for kind, chunk in _chunks(data):
        if kind == b"tEXt" and chunk.startswith(KEYWORD + b"\0"):
            return chunk[len(KEYWORD) + 1 :].decode("latin-1")
    return None


def write(path: Path, stamp: str) -> None:
    """Add ``stamp`` to the PNG at ``path`` as a text chunk after its header (IHDR, always first)."""
    data = path.read_bytes()
    header_end = len(SIGNATURE) + 12 + struct.unpack(">I", data[8:12])[0]
    body = b"tEXt" + KEYWORD + b"\0" + stamp.encode("latin-1")
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    partial = path.with_name(path.name + ".partial")  # never a half-written picture in its place
    partial.write_bytes(data[:header_end] + chunk + data[header_end:])
    partial.replace(path)
