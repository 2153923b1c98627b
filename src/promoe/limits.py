"""The limits within which every input is read and every count a user sets must lie (docs/reliability.md's "Bad input",
rule 5), in one place.

Each limit has a default far above what a real run needs, and an environment variable that raises (or lowers)
it: ``PROMOE_MAX_<NAME>`` (e.g. ``PROMOE_MAX_COUNT=100000000``). Going past one is one :class:`LimitError`
naming the limit, its value and both fixes, raised before the work or the memory it would take:

* input files are read through :func:`read_bytes` and :func:`iter_lines` (at most ``input_bytes`` bytes after
  gzip decompression, blank lines skipped at the speed of a byte scan) and parsed with :func:`load_json`;
* YAML (presets, ``key=value`` overrides, a run's ``config.yaml``) only through :func:`load_yaml`: at most
  ``config_bytes`` bytes, ``depth`` levels and ``config_nodes`` values with every alias counted as a copy of what
  it names, checked on the parsed node graph before anything is built from it (an alias bomb is refused
  without being expanded);
* config keys that count something are checked against ``count``, ``size`` or ``tokens`` by
  :func:`promoe.config.fields.check_fields`, command-line counts by :func:`count_arg`;
* an answer (and a reference) is scored on its first ``answer_words`` words (:func:`cut_words`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promoe.errors import PromoeError


class LimitError(PromoeError):
    """An input or a setting goes past a limit of :data:`LIMITS`."""


@dataclass(frozen=True)
class Limit:
    name: str
    default: int
    unit: str
    what: str

    @property
    def env(self) -> str:
        return f"PROMOE_MAX_{self.name.upper()}"

    def value(self) -> int:
        """The limit in force: ``$PROMOE_MAX_<NAME>`` when set, else the default."""
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise LimitError(f"{self.env}={raw!r} is not a whole number >= 1: unset it (default {self.default:,}) "
                             f"or give the limit you need")
        return value


LIMITS: dict[str, Limit] = {lim.name: lim for lim in (
    Limit("input_bytes", 2**30, "bytes", "read from one input file (task, prediction, reference, cluster or split "
                                         "file; after gzip decompression)"),
    Limit("config_bytes", 2**20, "bytes", "of one YAML preset, config.yaml or key=value override"),
    Limit("config_nodes", 10_000, "values", "in one YAML document, every alias counted as a copy of what it names"),
    Limit("depth", 64, "levels", "of nesting in one YAML document"),
    Limit("count", 10**7, "", "for a count a user sets: steps, instances, examples, tasks, repetitions"),
    Limit("size", 2**16, "", "for what is held in memory at once: batch sizes, model widths, experts, bootstrap "
                             "resamples"),
    Limit("tokens", 2**20, "tokens", "for a length in tokens: max_length, max_target_length, max_new_tokens"),
    Limit("answer_words", 5_000, "words", "of an answer or reference that are scored (the rest is cut before "
                                          "ROUGE-L and exact match)"),
)}
"""Every limit, by name. Defaults: the offline packages' largest file inflates to 40 MiB, their longest reference has
1,390 words and their longest test input 2,613 (what the copy-input floor answers); a preset holds about 100 values."""


def limit(name: str) -> int:
    """The value in force of limit ``name``."""
    return LIMITS[name].value()


def beyond(name: str, what: str, fix: str) -> LimitError:
    """The error of ``what`` going past limit ``name``; ``fix`` says what to give instead."""
    lim = LIMITS[name]
    unit = f" {lim.unit}" if lim.unit else ""
    return LimitError(f"{what}: beyond the {name} limit ({lim.value():,}{unit} {lim.what}): {fix}, or raise the "
                      f"limit: {lim.env}=<n>")


def check_count(key: str, value: int, lo: int, name: str = "count") -> int:
    """``value`` when ``lo <= value <=`` limit ``name``, else one :class:`LimitError` naming ``key``."""
    if value < lo:
        raise LimitError(f"{key}={value} is out of range: give a value >= {lo}")
    if value > limit(name):
        raise beyond(name, f"{key}={value}", f"give a value from {lo} to {limit(name):,}")
    return value


def count_arg(name: str = "count", lo: int = 1):
    """An argparse ``type`` for a count option: an int from ``lo`` to limit ``name`` (checked when parsed)."""
    def parse(text: str) -> int:
        try:
            return check_count("the value", int(text), lo, name)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        except LimitError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("the value=")) from None
    parse.__name__ = "count"
    return parse


def seed_arg(text: str) -> int:
    """An argparse ``type`` for a seed: an int from 0 to 2**32 - 1 (what numpy's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is out of range: give a seed from 0 to {2**32 - 1}")
    return value


# -- input files -------------------------------------------------------------------------------------------------

CHUNK = 2**20
_BLANK = re.compile(rb"\s*")


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _too_big(path: Path, name: str) -> LimitError:
    return beyond(name, f"{path}: more than {limit(name):,} bytes"
                  + (" once decompressed" if path.name.endswith(".gz") else ""), "give a smaller file")


def read_bytes(path: str | Path, name: str = "input_bytes") -> bytes:
    """The bytes of ``path`` (decompressed when it ends in ``.gz``), at most limit ``name`` of them."""
    p, cap = Path(path), limit(name)
    if not p.name.endswith(".gz") and p.stat().st_size > cap:
        raise _too_big(p, name)
    with _open(p) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise _too_big(p, name)
    return data


def read_text(path: str | Path, name: str = "input_bytes") -> str:
    """:func:`read_bytes` as UTF-8 text (a ``UnicodeDecodeError`` is the caller's to report)."""
    return read_bytes(path, name).decode("utf-8")


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of every non-blank line of ``path`` (gzip when it ends in ``.gz``), read in
    chunks; at most ``input_bytes`` bytes are read, so a file that inflates to gigabytes of blank lines is
    refused in seconds. Gzip and read errors (``OSError``, ``EOFError``, ``zlib.error``) are the caller's."""
    p, cap = Path(path), limit("input_bytes")
    total, line, pending = 0, 1, []
    with _open(p) as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
            if total > cap:
                raise _too_big(p, "input_bytes")
            end = chunk.rfind(b"\n") + 1
            if not end:
                pending.append(chunk)
                continue
            block = b"".join([*pending, chunk[:end]]) if pending else chunk[:end]
            pending = [chunk[end:]] if end < len(chunk) else []
            line = yield from _lines(block, line)
        if pending:
            yield from _lines(b"".join(pending), line)


def _lines(block: bytes, line: int) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of ``block`` numbered from ``line``; returns the number of the line after it. A blank
    block costs one ``strip`` and one ``count``, a blank run inside a block one regex match."""
    if not block.strip():
        return line + block.count(b"\n")
    at = pos = 0
    while (pos := _BLANK.match(block, pos).end()) < len(block):
        end = block.find(b"\n", pos)
        end = len(block) if end < 0 else end
        line += block.count(b"\n", at, pos)
        at = pos
        yield line, block[pos:end]
        pos = end
    return line + block.count(b"\n", at)


READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)
"""What reading a damaged, truncated or non-UTF-8 (gzip) file raises."""


def load_json(text: str | bytes) -> Any:
    """``json.loads`` whose nesting beyond the parser's depth (about 1,000 levels: Python's recursion limit) is a
    :class:`LimitError` instead of a ``RecursionError``; a ``json.JSONDecodeError`` is the caller's."""
    try:
        return json.loads(text)
    except RecursionError:
        raise LimitError("nests deeper than the JSON parser goes (about 1,000 levels; task, prediction and "
                         "reference records nest at most 5): give plain records") from None


# -- YAML ------------------------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops composing past the ``depth`` limit (PyYAML composes recursively) or the
    ``config_nodes`` limit (nodes as written, before aliases are expanded: a long document stops parsing early)."""

    def __init__(self, stream: str, where: str) -> None:
        super().__init__(stream)
        self.where, self.level, self.nodes = where, 0, 0
        self.max_depth, self.max_nodes = limit("depth"), limit("config_nodes")

    def compose_node(self, parent, index):
        self.level, self.nodes = self.level + 1, self.nodes + 1
        if self.level > self.max_depth:
            raise beyond("depth", f"{self.where}: YAML nested more than {self.max_depth} levels", "nest plain keys and lists")
        if self.nodes > self.max_nodes:
            raise beyond("config_nodes", f"{self.where}: YAML of more than {self.max_nodes:,} values", "write a smaller config")
        try:
            return super().compose_node(parent, index)
        finally:
            self.level -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def expanded(root: yaml.Node, where: str) -> tuple[int, int]:
    """``(values, depth)`` of the document under ``root`` with every alias expanded, counted on the node graph
    (each node once), so the count of a billion-value alias bomb costs what its few nodes cost."""
    done: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    stack = [root]
    while stack:
        node = stack[-1]
        if id(node) in done:
            stack.pop()
            continue
        todo = [k for k in _children(node) if id(k) not in done]
        if id(node) not in open_:
            open_.add(id(node))
            if any(id(k) in open_ for k in todo):
                raise LimitError(f"{where}: a YAML alias names a value that holds it: its expansion never ends; "
                                 "write the values out")
            stack += todo
            continue
        kids = [done[id(k)] for k in _children(node)]
        done[id(node)] = (1 + sum(n for n, _ in kids), 1 + max((d for _, d in kids), default=0))
        open_.discard(id(node))
        stack.pop()
    return done[id(root)]


def load_yaml(text: str, where: str) -> Any:
    """The data of YAML ``text`` (safe tags only, as ``yaml.safe_load``) within the ``config_bytes``, ``depth``
    and ``config_nodes`` limits; ``where`` names the file or override in errors. A ``yaml.YAMLError`` is the
    caller's."""
    if len(text) > limit("config_bytes"):
        raise beyond("config_bytes", f"{where}: {len(text):,} characters of YAML", "give a smaller config")
    loader = _Loader(text, where)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values, depth = expanded(node, where)
        if depth > limit("depth"):
            raise beyond("depth", f"{where}: YAML nested {depth} levels deep once its aliases are expanded",
                         "nest plain keys and lists")
        if values > limit("config_nodes"):
            raise beyond("config_nodes", f"{where}: YAML of {values:,} values once its aliases are expanded",
                         "write the config out plainly")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    """:func:`load_yaml` of a YAML file read within ``config_bytes`` (read errors are the caller's)."""
    return load_yaml(read_text(path, "config_bytes"), str(path))


# -- scoring ---------------------------------------------------------------------------------------------------

def cut_words(text: str) -> str:
    """``text`` up to its ``answer_words``-th whitespace-separated word (the rest dropped): ROUGE-L's table grows
    with the product of the two texts' lengths."""
    n = limit("answer_words")
    words = text.split(maxsplit=n)
    return text if len(words) <= n else " ".join(words[:n])
