"""SHA-256 of local files, remembered across runs by (path, size, mtime) so unchanged files are not re-read.

Model weights and image folders are pinned by the hash of their files (their ``revision``);
hashing a few GB of images on every run would cost more than the run. The remembered digests
live in one small JSON file under the cache root (``file-hashes.json``), rewritten atomically;
a file whose size or modification time changed is hashed again. Losing the JSON costs only time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path

from xaibench.atomic import write_text
from xaibench.cache import default_root

INDEX_NAME = "file-hashes.json"
_lock = threading.Lock()
_memory: dict[str, dict[str, dict]] = {}  # index path -> resolved file path -> {size, mtime_ns, sha256}


def _index_path() -> Path:
    return default_root() / INDEX_NAME


def _load(index: Path) -> dict[str, dict]:
    key = str(index)
    if key not in _memory:
        try:
            _memory[key] = json.loads(index.read_text())
        except (OSError, ValueError):  # absent or damaged: start afresh
            _memory[key] = {}
    return _memory[key]


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(paths: list[Path]) -> list[str]:
    """SHA-256 hex of each file, re-reading only files that are new or changed since last time."""
    index_path = _index_path()
    with _lock:
        index = _load(index_path)
        out, changed = [], False
        for path in paths:
            resolved = str(Path(path).resolve())
            stat = os.stat(resolved)
            entry = index.get(resolved)
            if entry is None or entry["size"] != stat.st_size or entry["mtime_ns"] != stat.st_mtime_ns:
                entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _hash_file(Path(resolved))}
                index[resolved] = entry
                changed = True
            out.append(entry["sha256"])
        if changed:
            with contextlib.suppress(OSError):  # a read-only cache only costs re-hashing next time
                write_text(index_path, json.dumps(index, sort_keys=True))
        return out


def file_digest(path: Path) -> str:
    return file_digests([path])[0]
