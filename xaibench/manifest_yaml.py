"""Reading manifest YAML safely: duplicate keys refused, size and alias expansion bounded,
and a locator that maps a path inside the document to ``file:line: path`` for error messages."""

from __future__ import annotations

import yaml

from xaibench.errors import UserError

MAX_BYTES = 1 << 20  # a manifest is a page of YAML; a megabyte is already absurd
MAX_ALIASES = 100  # a "billion laughs" document expands aliases exponentially: refuse early
MAX_VALUES = 10_000  # values once every alias is expanded (a shipped manifest has a few hundred)
MAX_DEPTH = 32  # nesting levels; a manifest needs five
MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *base` then a key of its own overrides, as YAML intends
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                ) from None
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
        self._seen: set[int] = set()
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except (yaml.YAMLError, RecursionError):
            node = None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node, path: tuple) -> None:
        if id(node) in self._seen:  # an alias: its lines are those of its anchor, already mapped
            return
        self._seen.add(id(node))
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
    """Counts alias uses while composing, and measures the document as its aliases would expand
    before building any value, so an alias bomb fails in milliseconds, not gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            self.alias_count = getattr(self, "alias_count", 0) + 1
            if self.alias_count > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name); write the values out", mark
                )
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root) -> None:
    """Refuse a document whose aliases expand past ``MAX_VALUES`` values, that nests deeper than
    ``MAX_DEPTH`` (aliases included), or whose alias contains itself: any later walk of the data
    would take exponential time, or recurse without end."""
    measured: dict[int, tuple[int, int]] = {}  # node -> (values, levels) once expanded
    active: set[int] = set()

    def refuse(node, problem: str):
        return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)

    def measure(node) -> tuple[int, int]:
        if id(node) in measured:
            return measured[id(node)]
        if id(node) in active:
            raise refuse(node, "an alias refers to a value that contains it")
        active.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = [measure(child) for child in node.value]
        elif isinstance(node, yaml.MappingNode):
            children = [measure(part) for pair in node.value for part in pair]
        else:
            children = []
        active.discard(id(node))
        values = 1 + sum(v for v, _ in children)
        levels = 1 + max((h for _, h in children), default=0)
        if values > MAX_VALUES:
            raise refuse(node, f"aliases (*name) expand to more than {MAX_VALUES:,} values; write the values out")
        if levels > MAX_DEPTH:
            raise refuse(node, f"nested more than {MAX_DEPTH} levels deep")
        measured[id(node)] = (values, levels)
        return values, levels

    measure(root)


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
