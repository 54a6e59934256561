"""Reading YAML that a person wrote, with limits that make every input answer at once.

PyYAML's ``safe_load`` builds no Python objects, but it still trusts its input's shape:
a "billion laughs" of anchors and merge keys expands exponentially, a 50 MB file takes
minutes to compose, deep nesting ends in a RecursionError, non-UTF-8 bytes in a
UnicodeDecodeError, and a key given twice silently keeps the last value (a second
``sites:`` block replaces the first). :func:`load_yaml` reads a file with:

* a size cap (:data:`MAX_BYTES`, 1 MiB), checked on ``stat`` and on the bytes read, before
  any parsing; only regular files are read (no FIFO or device can block it);
* strict UTF-8 (the offending byte and its line are named);
* at most :data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES` nodes (counted with
  every alias expanded), checked while composing, so parsing stops at the limit;
* no duplicate key in any mapping (the key and both lines are named);
* for campaign files (``aliases=False``): no anchor, alias or merge key (``<<``) at all.
  Pipeline files (``aliases=True``) may use them, as ``lsst.pipe.base`` allows, within
  the node count (an alias counts as many nodes as it expands to; a recursive alias is refused).

Events come from libyaml's parser (``yaml._yaml.CParser``, fast); nodes are composed and
constructed by PyYAML's own Python ``Composer`` and ``SafeConstructor`` with the checks
above, so no tag beyond the YAML 1.1 core types is ever constructed. Every failure is a
:class:`YamlInputError` whose message starts with the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode
from yaml.resolver import Resolver

from multisite_drp.errors import InputError

try:  # libyaml's event parser (PyYAML wheels ship it)
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader as _Reader
    from yaml.scanner import Scanner as _Scanner

    class _Parser(_Reader, _Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            _Reader.__init__(self, stream)
            _Scanner.__init__(self)
            _PyParser.__init__(self)


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlInputError", "load_yaml", "read_capped"]

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 50
MAX_NODES = 20_000  # a campaign file has a few hundred; a pipeline file a few thousand
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(InputError, ValueError):
    """A YAML file is too large, not UTF-8, not valid YAML or beyond the loader's limits."""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def read_capped(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = MAX_BYTES) -> str:
    """The text of a regular file of at most ``max_bytes``, decoded as strict UTF-8."""
    path = Path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise YamlInputError(f"{path}: cannot read {what}: not a regular file")
        if st.st_size > max_bytes:
            raise YamlInputError(f"{path}: {what} is {st.st_size} bytes; expected at most {_mib(max_bytes)}")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except YamlInputError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise YamlInputError(f"{path}: cannot read {what}: {reason}") from None
    if len(data) > max_bytes:
        raise YamlInputError(f"{path}: {what} is larger than {_mib(max_bytes)}; expected at most {_mib(max_bytes)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlInputError(f"{path}: {what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
                             f"(offset {exc.start}); expected UTF-8") from None


class _LimitError(ComposerError):
    pass


class _Loader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """libyaml events; PyYAML's composer and safe constructor with depth, node, alias and key checks."""

    def __init__(self, text: str, *, aliases: bool, max_depth: int, max_nodes: int) -> None:
        _Parser.__init__(self, text)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self.allow_aliases = aliases
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.depth = 0
        self.nodes = 0
        self.sizes: dict[int, int] = {}  # id(anchored node) -> nodes it expands to

    def _count(self, n: int, mark: Any) -> None:
        self.nodes += n
        if self.nodes > self.max_nodes:
            raise _LimitError(None, None, f"more than {self.max_nodes} nodes (aliases counted expanded); "
                              "expected a small configuration document", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if not self.allow_aliases and (isinstance(event, AliasEvent) or event.anchor is not None):
            kind = "alias" if isinstance(event, AliasEvent) else "anchor"
            sign = "*" if kind == "alias" else "&"
            raise _LimitError(None, None, f"found {kind} {sign}{event.anchor}: anchors, aliases and merge keys "
                              "are not allowed in this file; write each value out", event.start_mark)
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:
                raise _LimitError(None, None, f"found recursive alias *{event.anchor}; expected an alias to a "
                                  "complete node", event.start_mark)
            self._count(size, event.start_mark)
            return node
        self.depth += 1
        if self.depth > self.max_depth:
            raise _LimitError(None, None, f"nesting deeper than {self.max_depth} levels; expected a flat "
                              "configuration document", event.start_mark)
        before = self.nodes
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.sizes[id(node)] = self.nodes - before
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    if not self.allow_aliases:
                        raise ConstructorError(None, None, "found merge key '<<': anchors, aliases and merge keys "
                                               "are not allowed in this file; write each value out",
                                               key_node.start_mark)
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    raise ConstructorError(None, None, "found a key that is a list or mapping; expected a "
                                           "plain key", key_node.start_mark) from None
                if first is not None:
                    raise ConstructorError(None, None, f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                           f"(first at line {first + 1}); expected each key once",
                                           key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | os.PathLike[str], *, what: str = "file", aliases: bool = False,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """Read and parse one YAML document within the limits above; :class:`YamlInputError` otherwise."""
    text = read_capped(path, what=what, max_bytes=max_bytes)
    loader = None
    try:
        loader = _Loader(text, aliases=aliases, max_depth=max_depth, max_nodes=max_nodes)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = "; ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlInputError(f"{path}: not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:  # a reader error (a control character) from libyaml
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise YamlInputError(f"{path}: not valid YAML: {first}") from None
    except (ValueError, OverflowError) as exc:  # an integer of more than 4300 digits, a bad date
        raise YamlInputError(f"{path}: not valid YAML: a value cannot be read ({exc})") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops nesting long before
        raise YamlInputError(f"{path}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
