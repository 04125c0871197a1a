"""Content-addressed cache of trained models and per-item tensors (logits, attributions).

``key = sha256(canonical JSON of an explicit component list)``. Tensors are stored by item id:
each write is a shard (a tensor file with the ids of its rows and a JSON record with its
SHA-256), so lookups go by id whatever the batch size that wrote them. Files are written to a
temporary name and renamed (the JSON record last, so a shard exists only once it is whole),
read with ``torch.load(weights_only=True)`` and checked against the stored hash; a shard that
fails the check is deleted and recomputed. ``XAIBENCH_CACHE`` moves the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from xaibench.atomic import write_bytes
from xaibench.errors import UserError
from xaibench.keys import canonical_json, make_key  # noqa: F401  (re-exported: older imports)

KINDS = ("models", "logits", "activations", "attributions")
# Marks the root as a cache (https://bford.info/cachedir/): backup tools skip it, and `clear`
# deletes nothing under a folder that lacks it.
TAG_NAME = "CACHEDIR.TAG"
TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# xaibench cache: safe to delete, rebuilt on demand.\n"


def default_root() -> Path:
    if os.environ.get("XAIBENCH_CACHE"):
        return Path(os.environ["XAIBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xaibench"


def tensor_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Cache:
    """One cache root with a model store and per-item tensor stores."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_root()
        self._index: dict[tuple[str, str], dict[str, str]] = {}  # (kind, key) -> item id -> shard
        self._shards: OrderedDict[Path, dict[str, torch.Tensor]] = OrderedDict()
        self._tagged = False

    def ensure_writable(self) -> None:
        """Create the root with its tag, or raise a UserError saying how to fix the location."""
        if self._tagged:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tag = self.root / TAG_NAME
            if not tag.exists():
                write_bytes(tag, TAG)
        except OSError as error:
            raise UserError(
                f"cache folder {self.root} is not usable ({error.strerror or error}); "
                "set XAIBENCH_CACHE to a writable folder"
            ) from None
        self._tagged = True

    # ---- models -------------------------------------------------------------------------
    def _model_paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / "models"
        return folder / f"{key}.pt", folder / f"{key}.json"

    def has_model_state(self, key: str) -> bool:
        weights, record_path = self._model_paths(key)
        return weights.exists() and record_path.exists()

    def model_record(self, key: str) -> dict[str, Any] | None:
        """The JSON record stored beside a fit's weights (accuracies, time), or None."""
        _, record_path = self._model_paths(key)
        record = _read_record(record_path)
        return record if isinstance(record, dict) else None

    def load_model_state(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        import torch

        weights, record_path = self._model_paths(key)
        if not record_path.exists() or not weights.exists():
            return None
        record = _read_record(record_path)
        try:
            data = weights.read_bytes()
        except FileNotFoundError:
            return None
        if not isinstance(record, dict) or sha256(data) != record.get("sha256"):
            self._warn(f"cached model {key[:12]} is damaged; it is moved aside and retrained")
            _move_aside(weights)
            _move_aside(record_path)
            return None
        return torch.load(io.BytesIO(data), weights_only=True), record

    def save_model_state(self, key: str, state: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        self.ensure_writable()
        weights, record_path = self._model_paths(key)
        data = tensor_bytes(state)
        write_bytes(weights, data)
        record = {**record, "sha256": sha256(data), "written": time.time()}
        write_bytes(record_path, json.dumps(record, indent=2, default=str).encode())

    # ---- per-item tensors ---------------------------------------------------------------
    def _key_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def _load_index(self, kind: str, key: str) -> dict[str, str]:
        index: dict[str, str] = {}
        folder = self._key_dir(kind, key)
        if folder.is_dir():
            for record_path in folder.glob("*.json"):
                record = _read_record(record_path)
                ids = record.get("ids") if isinstance(record, dict) else None
                if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                    # A damaged record: move it and its tensor aside, so the items are recomputed.
                    self._warn(f"cache record {record_path} is damaged; moved aside, its items are recomputed")
                    _move_aside(record_path)
                    _move_aside(record_path.with_suffix(".pt"))
                    continue
                for item_id in ids:
                    index[item_id] = record_path.stem
        self._index[(kind, key)] = index
        return index

    def _current_index(self, kind: str, key: str) -> dict[str, str]:
        # Read the shard records once per process; `put` keeps the in-memory index current.
        if (kind, key) not in self._index:
            return self._load_index(kind, key)
        return self._index[(kind, key)]

    def _index_covering(self, kind: str, key: str, ids: list[str]) -> dict[str, str]:
        # Another process (a Dask worker, a concurrent run) may have written shards since this
        # process read the records: read them again once before calling an item missing.
        index = self._current_index(kind, key)
        if any(i not in index for i in ids):
            index = self._load_index(kind, key)
        return index

    def has(self, kind: str, key: str, ids: list[str]) -> list[bool]:
        index = self._index_covering(kind, key, ids)
        return [i in index for i in ids]

    def get(self, kind: str, key: str, ids: list[str]) -> dict[str, torch.Tensor]:
        """The stored tensors of those ids that are present (verified), by id."""
        index = self._index_covering(kind, key, ids)
        found: dict[str, torch.Tensor] = {}
        for shard in sorted({index[i] for i in ids if i in index}):
            rows = self._read_shard(kind, key, shard)
            if rows is None:
                continue
            found.update({i: rows[i] for i in ids if i in rows})
        return found

    def _read_shard(self, kind: str, key: str, shard: str) -> dict[str, torch.Tensor] | None:
        import torch

        folder = self._key_dir(kind, key)
        path = folder / f"{shard}.pt"
        if path in self._shards:
            self._shards.move_to_end(path)
            return self._shards[path]
        record_path = folder / f"{shard}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._forget(kind, key, shard)
            return None
        record = _read_record(record_path)
        if record is None and not record_path.exists():
            self._forget(kind, key, shard)
            return None
        stacked = None
        if isinstance(record, dict) and sha256(data) == record.get("sha256"):
            try:
                stacked = torch.load(io.BytesIO(data), weights_only=True)
            except Exception:  # a shard that hashes right but does not load: treat as damaged
                stacked = None
        if stacked is None or len(record.get("ids", [])) != len(stacked):
            self._warn(
                f"cache shard {path} is damaged (checksum mismatch or unreadable); it is moved aside and recomputed"
            )
            _move_aside(record_path)
            _move_aside(path)
            self._forget(kind, key, shard)
            return None
        rows = dict(zip(record["ids"], stacked.unbind(0), strict=True))
        self._shards[path] = rows
        while len(self._shards) > 8:  # a few recent shards serve overlapping batches
            self._shards.popitem(last=False)
        return rows

    def _forget(self, kind: str, key: str, shard: str) -> None:
        """Drop one lost shard's ids from the index; the key's other shards stay known."""
        index = self._index.get((kind, key), {})
        for item_id in [i for i, s in index.items() if s == shard]:
            del index[item_id]

    def put(self, kind: str, key: str, ids: list[str], stacked: torch.Tensor, meta: dict | None = None) -> None:
        if not ids:
            return
        self.ensure_writable()
        shard = sha256("\x1f".join(ids).encode())[:24]
        data = tensor_bytes(stacked.detach().cpu().contiguous())
        folder = self._key_dir(kind, key)
        write_bytes(folder / f"{shard}.pt", data)
        record = {"ids": ids, "sha256": sha256(data), "shape": list(stacked.shape), **(meta or {})}
        write_bytes(folder / f"{shard}.json", json.dumps(record).encode())
        index = self._index.setdefault((kind, key), {})
        index.update(dict.fromkeys(ids, shard))

    # ---- maintenance --------------------------------------------------------------------
    def info(self) -> list[dict[str, Any]]:
        rows = []
        for kind in KINDS:
            folder = self.root / kind
            files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
            if kind == "models":
                entries = len([p for p in files if p.suffix == ".json"])
            else:
                entries = len({p.parent for p in files})
            rows.append(
                {
                    "kind": kind,
                    "entries": entries,
                    "files": len(files),
                    "bytes": sum(p.stat().st_size for p in files),
                }
            )
        return rows

    def models(self) -> list[dict[str, Any]]:
        """The records of stored fits; a damaged record shows as ``{"damaged": path}``."""
        folder = self.root / "models"
        out = []
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            record = _read_record(path)
            out.append(record if isinstance(record, dict) else {"damaged": str(path)})
        return out

    def clear(self, kind: str | None = None) -> int:
        """Remove one kind (or everything); returns the number of bytes freed."""
        if any((self.root / k).exists() for k in KINDS) and not (self.root / TAG_NAME).exists():
            raise UserError(
                f"{self.root} has no {TAG_NAME}, so it was not made by xaibench; nothing deleted (check XAIBENCH_CACHE)"
            )
        freed = 0
        # checks/, memo/ and boards/ hold derived facts (preflight verdicts, split indices, board
        # tables): see preflight.py, memo.py and board_memo.py; "everything" includes them.
        for k in [kind] if kind else [*KINDS, "locks", "checks", "memo", "boards"]:
            folder = self.root / k
            if folder.exists():
                freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder)
        self._index.clear()
        self._shards.clear()
        return freed

    def verify(self) -> list[Path]:
        """Check every stored file against its recorded hash; returns the corrupt ones."""
        bad = []
        for kind in KINDS:
            for record_path in (self.root / kind).rglob("*.json"):
                data_path = record_path.with_suffix(".pt")
                record = _read_record(record_path)
                if not isinstance(record, dict) or "sha256" not in record:
                    bad.append(record_path)
                    continue
                expected = record["sha256"]
                if not data_path.exists() or sha256(data_path.read_bytes()) != expected:
                    bad.append(data_path)
        return bad

    @staticmethod
    def _warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)


def _read_record(path: Path) -> Any:
    """A JSON record, or None when it is missing, unreadable or not JSON (damaged)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _move_aside(path: Path) -> None:
    """Rename a damaged file to ``*.damaged`` (kept for inspection, never read again)."""
    with contextlib.suppress(OSError):
        path.replace(path.with_name(path.name + ".damaged"))
