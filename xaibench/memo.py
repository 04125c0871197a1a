"""Small derived facts remembered between processes, in the cache (``memo/``).

A dataset's split indices and its revision are pure functions of files that ship in a package,
but computing them means importing that package's heavy machinery (scikit-learn's
``load_digits`` and ``train_test_split`` import scipy: about 1 s idle, 3 s on a busy machine).
`check`, `plan` and a warm `run` need only these facts, so they are remembered as JSON, keyed
by everything they depend on (the source file's size and mtime, the library's version, the
parameters, xaibench's version). A missing, unreadable or damaged memo is simply recomputed and
rewritten; a cache folder that cannot be written only costs the next process the computation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from xaibench import __version__
from xaibench.atomic import write_bytes
from xaibench.cache import default_root
from xaibench.keys import make_key


def remembered(name: str, components: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-ready value, read from the memo when one with the same key exists."""
    key = make_key({"memo": name, "xaibench": __version__, **components})
    path = default_root() / "memo" / f"{name}-{key[:32]}.json"
    try:
        stored = json.loads(path.read_bytes())
        if stored.get("key") == key:
            return stored["value"]
    except (OSError, ValueError, AttributeError, KeyError):  # missing or damaged: recompute
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, json.dumps({"key": key, "value": value}).encode())
    except OSError:
        pass
    return value
