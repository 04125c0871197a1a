"""A corpus of certainly-invalid manifests, generated from every shipped manifest at test time.

Each ``Case`` is one mutation of one manifest in ``manifests/`` (read when the corpus is built,
so manifests added later are covered): wrong types, out-of-range and huge numbers, unknown and
misspelt names, empty and duplicate lists, YAML syntax errors, anchors and aliases, non-UTF-8
bytes, huge files, wrong top-level types and nested garbage. Every mutation is chosen so the
result cannot be valid (a misspelt name is never a registered one, a number is outside any
sensible range), and ``expect`` holds fragments the one-line error must contain, so a case
refused for some unrelated reason does not count as refused for the right one.
"""

from __future__ import annotations

import copy
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xaibench import registry
from xaibench.manifest import OPTION_TYPES, PLUGIN_LISTS, REQUIRED, TOP_LEVEL
from xaibench.manifest_yaml import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, MAX_VALUES

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
HUGE_INT = 10**12  # no epoch count, step count, sample count or size is this large
SEED_OUT_OF_RANGE = 2**64  # seeds go up to 2**63 - 1


@dataclass(frozen=True)
class Case:
    id: str
    text: bytes
    expect: tuple[str, ...] = ()  # fragments the error line must contain


def shipped() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


def dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def misspell(word: str, avoid: typing.Iterable[str]) -> str:
    """A near miss of ``word`` (drop, swap or double a letter) that is none of ``avoid``."""
    avoid = set(avoid) | {word}
    for i in range(len(word) - 1, -1, -1):
        for variant in (word[:i] + word[i + 1 :], word[:i] + word[i + 1 : i + 2] + word[i] + word[i + 2 :]):
            if variant and variant not in avoid and variant[0].isalnum():
                return variant
    return word + "zz"


def entry_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


def entry_params(entry: Any) -> dict:
    return {} if isinstance(entry, str) else dict(next(iter(entry.values())) or {})


def bad_values(annotation: Any, param: str) -> list[tuple[str, Any]]:
    """(tag, value) pairs no parameter of this annotation may accept."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return []
    if origin is typing.Literal:
        out = [("unknown_choice", "zz_no_such_choice"), ("list", ["zz"])]
        return out + ([("int", 12345)] if not any(isinstance(a, int) for a in args) else [("bad_int", 12345)])
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        options = [a for a in args if a is not type(None)]
        out = [("str", "zz_not_a_number" if str not in options else None), ("list", [[1]]), ("dict", {"a": 1})]
        if int in options:
            out += [("negative", -1), ("huge", HUGE_INT)]
        if float in options:
            out += [("nan", math.nan), ("inf", math.inf)]
        return [(t, v) for t, v in out if v is not None]
    if origin in (tuple, list):
        out = [("str", "zz"), ("nested", [[0.5]]), ("str_item", ["zz"]), ("dict", {"a": 1})]
        if args and args[0] is float:
            out.append(("nan_item", [math.nan]))
        if "fraction" in param:
            out += [("above_one", [0.5, 1.5]), ("zero", [0.0, 0.5]), ("negative", [-0.2]), ("empty", [])]
        return out
    if origin is dict:
        return [("int", 5), ("str", "zz"), ("list", [1])]
    if annotation is bool:
        return [("str", "maybe"), ("int", 2), ("list", [True])]
    if annotation is int:
        huge = SEED_OUT_OF_RANGE if "seed" in param else HUGE_INT
        return [("str", "zz"), ("float", 2.5), ("bool", True), ("list", [1]), ("negative", -1), ("huge", huge)]
    if annotation is float:
        return [
            ("str", "zz"),
            ("bool", True),
            ("list", [0.5]),
            ("nan", math.nan),
            ("inf", math.inf),
            ("neg_inf", -math.inf),
            ("negative", -1e300),
            ("huge", 1e300),
        ]
    if annotation is str:
        return [("int", 123), ("list", ["zz"]), ("dict", {"a": 1})]
    return []


def _with_entry(data: dict, key: str, index: int, entry: Any) -> dict:
    out = copy.deepcopy(data)
    out[key][index] = entry
    return out


def structural_cases(stem: str, data: dict) -> list[tuple[str, Any, tuple[str, ...]]]:
    """(id, mutated data, expected fragments) for the manifest's shape, options and lists."""
    out: list[tuple[str, Any, tuple[str, ...]]] = []

    def add(tag: str, mutated: Any, *expect: str) -> None:
        out.append((f"{stem}-{tag}", mutated, expect))

    def change(tag: str, key: str, value: Any, *expect: str) -> None:
        mutated = copy.deepcopy(data)
        mutated[key] = value
        add(tag, mutated, *expect)

    for key in REQUIRED:
        mutated = {k: v for k, v in data.items() if k != key}
        add(f"missing-{key}", mutated, f"missing required key '{key}'")
    for key in data:
        wrong = misspell(key, TOP_LEVEL)
        add(f"misspelt-key-{key}", {(wrong if k == key else k): v for k, v in data.items()}, "unknown key")
    add("extra-key", {**data, "extras": {"a": 1}}, "unknown key 'extras'")
    for tag, value in [("list", [data]), ("string", "manifest"), ("int", 42), ("null", None), ("bool", True)]:
        add(f"top-level-{tag}", value, "a manifest is a mapping")
    for tag, value in [("int", 42), ("list", ["a"]), ("empty", ""), ("dotdot", "../escape"), ("space", "a b")]:
        change(f"name-{tag}", "name", value, "name must be")
    for tag, value in [("2", 2), ("str", "1"), ("float", 1.5), ("null", None)]:
        change(f"version-{tag}", "version", value, "version")
    change("description-int", "description", 5, "description")
    for tag, value, expect in [
        ("str", "extra.py", "plugins"),
        ("int-item", [1], "plugins"),
        ("missing-file", ["no_such_file.py"], "plugin file not found"),
        ("missing-module", ["no_such_module_zz:thing"], "cannot import module"),
        ("dict-item", [{"a": 1}], "plugins"),
    ]:
        change(f"plugins-{tag}", "plugins", value, expect)
    for tag, value in [("str", "beats_random"), ("int-item", [1]), ("empty-gate", [{}]), ("dict", {"rule": "x"})]:
        change(f"gates-{tag}", "gates", value, "gates")

    options = dict(data.get("options") or {})
    for tag, value in [("list", ["limit", 8]), ("str", "fast"), ("int", 5)]:
        change(f"options-{tag}", "options", value, "options")
    for key in OPTION_TYPES:
        change(f"option-misspelt-{key}", "options", {**options, misspell(key, OPTION_TYPES): 1}, "unknown option")
    int_options = {"limit": (-1, 0, HUGE_INT), "batch_size": (0, -5, 10**9), "chunk_size": (0, HUGE_INT)}
    for key, values in int_options.items():
        for value in values:
            change(f"option-{key}-{value}", "options", {**options, key: value}, key)
        for tag, value in [("str", "many"), ("float", 2.5), ("bool", True), ("list", [8]), ("dict", {"a": 1})]:
            change(f"option-{key}-{tag}", "options", {**options, key: value}, key)
    for tag, value in [
        ("int", 5),
        ("str", "0"),
        ("empty", []),
        ("negative", [-1]),
        ("duplicate", [0, 0]),
        ("str-item", ["a"]),
        ("float-item", [1.5]),
        ("bool-item", [True]),
        ("huge", [SEED_OUT_OF_RANGE]),
        ("nested", [[0]]),
    ]:
        change(f"option-seeds-{tag}", "options", {**options, "seeds": value}, "seeds")
    for tag, value in [("int", 5), ("unknown", "foo"), ("list", ["label"])]:
        change(f"option-target-{tag}", "options", {**options, "target": value}, "target")
    for tag, value in [("int", 0), ("mps", "mps"), ("tpu", "tpu"), ("empty", ""), ("cuda-neg", "cuda:-1")]:
        change(f"option-device-{tag}", "options", {**options, "device": value}, "device")
    for tag, value in [("int", 5), ("list", ["test"]), ("unknown", "no_such_split")]:
        change(f"option-split-{tag}", "options", {**options, "split": value}, "split")
    change("options-nested-garbage", "options", {**options, "limit": {"a": {"b": [1, [2, {"c": None}]]}}}, "limit")

    for key, kind in PLUGIN_LISTS.items():
        entries = list(data[key])
        for tag, value, expect in [
            ("empty", [], "non-empty list"),
            ("null", None, "non-empty list"),
            ("string", entry_name(entries[0]), "non-empty list"),
            ("mapping", {entry_name(entries[0]): {}}, "non-empty list"),
            ("int", 5, "non-empty list"),
            ("int-item", [5], "expected a name"),
            ("null-item", [None], "expected a name"),
            ("nested-list", [[entry_name(entries[0])]], "expected a name"),
            ("two-key-item", [{entry_name(entries[0]): {}, "zz": {}}], "expected a name"),
            ("params-list", [{entry_name(entries[0]): [1, 2]}], "parameters must be a mapping"),
            ("params-int", [{entry_name(entries[0]): 5}], "parameters must be a mapping"),
            ("int-name", [{5: {}}], "name must be a string"),
            ("duplicate", entries + [entries[0]], "listed twice"),
            ("unknown", entries + ["zz_not_a_plugin"], f"unknown {kind} 'zz_not_a_plugin'"),
            ("deep-garbage", [{entry_name(entries[0]): {"zz": {"a": [{"b": {"c": [None]}}]}}}], "unknown parameter"),
        ]:
            change(f"{key}-{tag}", key, value, expect)
    return out


def plugin_cases(stem: str, data: dict, seen: set) -> list[tuple[str, Any, tuple[str, ...]]]:
    """Misspelt plugin names, unknown parameters and bad values of every parameter of every
    plugin the manifest lists (each (plugin, parameter, mutation) once across manifests)."""
    registry.load_builtins()
    out: list[tuple[str, Any, tuple[str, ...]]] = []
    for key, kind in PLUGIN_LISTS.items():
        for index, entry in enumerate(data[key]):
            name, params = entry_name(entry), entry_params(entry)
            if (kind, name) in seen:
                continue
            seen.add((kind, name))
            wrong = misspell(name, registry.names(kind))
            out.append(
                (f"{stem}-{key}-{name}-misspelt", _with_entry(data, key, index, {wrong: params}), (f"'{wrong}'",))
            )
            unknown = {**params, "zz_no_such_param": 1}
            out.append(
                (f"{stem}-{key}-{name}-unknown-param", _with_entry(data, key, index, {name: unknown}), ("zz_no_such",))
            )
            cls = registry.get(kind, name)
            hints = typing.get_type_hints(cls)
            for field in registry.parameters(cls):
                misspelt = misspell(field.name, [f.name for f in registry.parameters(cls)])
                renamed = {**{k: v for k, v in params.items() if k != field.name}, misspelt: registry.default_of(field)}
                out.append(
                    (
                        f"{stem}-{key}-{name}-{field.name}-misspelt",
                        _with_entry(data, key, index, {name: renamed}),
                        (f"'{misspelt}'",),
                    )
                )
                for tag, value in bad_values(hints[field.name], field.name):
                    mutated = _with_entry(data, key, index, {name: {**params, field.name: value}})
                    out.append((f"{stem}-{key}-{name}-{field.name}-{tag}", mutated, (field.name,)))
    return out


def text_cases(stem: str, text: str) -> list[tuple[str, bytes, tuple[str, ...]]]:
    """Mutations of the file's bytes: YAML syntax, encodings, sizes, anchors and aliases."""
    lines = text.splitlines(keepends=True)
    first_key = next(i for i, line in enumerate(lines) if line.startswith("name:"))
    body = text.encode()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    out = [
        ("syntax-unclosed-flow", text + "methods: [random, saliency\n", ("invalid YAML",)),
        ("syntax-tab-indent", text + "options:\n\tlimit: 8\n", ("invalid YAML",)),
        ("syntax-double-colon", text.replace("name:", "name: a: b:", 1), ("invalid YAML",)),
        ("syntax-unclosed-quote", text.replace("name:", 'name: "unclosed', 1), ("invalid YAML",)),
        ("syntax-bad-directive", "%YAML 9.9\n---\n" + text, ("invalid YAML",)),
        ("syntax-python-tag", text + "extra: !!python/object/apply:os.system [echo hi]\n", ("invalid YAML",)),
        ("syntax-unknown-tag", text.replace("name:", "name: !custom", 1), ("invalid YAML",)),
        ("syntax-two-documents", text + "---\n" + text, ("invalid YAML",)),
        ("syntax-duplicate-key", text + "name: again\n", ("appears twice",)),
        ("syntax-list-key", text + "? [a, b]\n: 1\n", ("key",)),
        ("syntax-mapping-key", text + "? {a: 1}\n: 1\n", ("key",)),
        ("syntax-nul-byte", text.replace("name:", "na\x00me:", 1), ("invalid YAML",)),
        ("syntax-control-char", text.replace("name:", "name:\x07", 1), ("invalid YAML",)),
        ("syntax-deep-nesting", text + "extra: " + "[" * 20000 + "]" * 20000 + "\n", ("nested",)),
        ("syntax-deep-block", text + "".join(" " * i + "k:\n" for i in range(1000)), ("nested",)),
        ("syntax-nested-40", text + "extra: " + "[" * 40 + "]" * 40 + "\n", (f"nested more than {MAX_DEPTH}",)),
        ("empty-file", "", ("a manifest is a mapping",)),
        ("only-comment", "# nothing here\n", ("a manifest is a mapping",)),
        ("only-document-marker", "---\n...\n", ("a manifest is a mapping",)),
        ("alias-bomb", bomb, (f"expand to more than {MAX_VALUES:,} values",)),
        ("alias-bomb-inside", text + bomb.replace("a:", "extra_a:", 1), ("expand to more than",)),
        ("alias-many", text + "extra: &x 1\nmore: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n", ("aliases",)),
        ("alias-undefined", text + "extra: *nowhere\n", ("invalid YAML",)),
        (
            "anchor-list-reused",
            re.sub(
                "^methods:",
                "methods: &m",
                re.sub("^metrics:", "zz_metrics:", text, count=1, flags=re.M),
                count=1,
                flags=re.M,
            )
            + "metrics: *m\n",
            ("unknown key 'zz_metrics'",),
        ),
        ("alias-recursive", text + "extra: &r [*r]\n", ("refers to a value that contains it",)),
        ("merge-key-garbage", text + "options2: &o {limit: 8}\nextra: {<<: *o, zz: 1}\n", ("unknown key",)),
        ("huge-comment", text + "#" + "x" * MAX_BYTES + "\n", ("bytes; the limit is",)),
        ("huge-name", text.replace("name:", "name: " + "a" * (MAX_BYTES + 1) + "\nold_name:", 1), ("limit",)),
        ("huge-ten-megabytes", text + ("# padding\n" * (1 << 20)), ("bytes; the limit is",)),
    ]
    encoded = [(tag, value.encode(), expect) for tag, value, expect in out]
    encoded += [
        ("non-utf8-leading-ff", b"\xff" + body, ("not UTF-8",)),
        ("non-utf8-inside", body.replace(b"name:", b"name: caf\xe9", 1), ("not UTF-8",)),
        ("non-utf8-truncated-sequence", body.replace(b"name:", b"name: \xc3\x28", 1), ("not UTF-8",)),
        ("non-utf8-utf16", "\ufeff".encode("utf-16-le") + text.encode("utf-16-le"), ("not UTF-8",)),
        ("non-utf8-lone-surrogate", body + b"extra: \xed\xa0\x80\n", ("not UTF-8",)),
        ("non-utf8-at-end", body + b"\x80", ("not UTF-8",)),
        ("binary-garbage", bytes(range(256)) * 4, ("",)),
    ]
    assert first_key >= 0
    return [(f"{stem}-{tag}", data, expect) for tag, data, expect in encoded]


def corpus() -> list[Case]:
    """Every case for every shipped manifest; ids are unique, texts are distinct."""
    cases: dict[str, Case] = {}
    texts: set[bytes] = set()
    seen_plugins: set = set()
    for path in shipped():
        stem, text = path.stem, path.read_text()
        data = yaml.safe_load(text)
        mutated = structural_cases(stem, data) + plugin_cases(stem, data, seen_plugins)
        generated = [(case_id, dump(d), expect) for case_id, d, expect in mutated]
        for case_id, body, expect in generated + text_cases(stem, text):
            if body in texts:
                continue
            texts.add(body)
            assert case_id not in cases, case_id
            cases[case_id] = Case(case_id, body, tuple(e for e in expect if e))
    return list(cases.values())
