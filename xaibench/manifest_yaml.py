"""Reading manifest YAML safely: duplicate keys refused, size and alias expansion bounded,
and a locator that maps a path inside the document to ``file:line: path`` for error messages."""

from __future__ import annotations

import yaml

from xaibench.errors import UserError

MAX_BYTES = 1 << 20  # a manifest is a page of YAML; a megabyte is already absurd
MAX_ALIASES = 100  # a "billion laughs" document expands aliases exponentially: refuse early


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class Locator:
    """Maps a path inside the YAML document to 'file:line: path' for error messages."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node, path: tuple) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[(*path, key.value)] = key.start_mark.line + 1
                self._walk(value, (*path, key.value))
                self.lines[(*path, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    def __call__(self, *path) -> str:
        line = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        where = f"{self.source}:{line}" if line else self.source
        return f"{where}: {dotted}" if dotted else where


class _BoundedLoader(UniqueKeyLoader):
    """Counts alias uses while composing, so an alias bomb fails in microseconds, not gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            self.alias_count = getattr(self, "alias_count", 0) + 1
            if self.alias_count > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name); write the values out", mark
                )
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes, source: str):
    """The document's data, or a UserError naming file:line:column and the problem."""
    if len(text) > MAX_BYTES:
        raise UserError(
            f"{source}: manifest is {len(text):,} bytes; the limit is {MAX_BYTES:,} (is this the right file?)"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{source}: not UTF-8 text (byte {error.start}); save the manifest as UTF-8") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise UserError(f"{source}: YAML nested too deeply") from None
