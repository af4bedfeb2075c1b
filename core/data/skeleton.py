"""One chat-template render per conversation *shape*, not five per conversation (ftc.core.data.batch).

A template is *content-opaque* when it only ever copies a message's content into its output, verbatim,
through string concatenation (`{{ a + m['content'] ~ b }}`): no filter, test, comparison, `set`, call or
`if` sees it. Rendering a conversation with such a template equals rendering its *skeleton* (each content
replaced by a sentinel) and putting the contents back in place of the sentinels. The skeleton depends only
on the messages' other keys (role...), so the renders `encode._spans` needs are done once per shape and
kept (`Shape`: the whole conversation as literal pieces and content slots, each trained turn's bounds in
it); a row then costs a join. `| trim` directly on a content is allowed: rows whose contents all equal
their `str.strip()` (what Jinja's trim is) take this path, others the exact one.

Opacity is decided once per template by walking its Jinja syntax tree; anything this walk does not
recognise makes the template not opaque, and the caller renders every row as before; so does a call
of `strftime_now` or `lipsum` (a shape's render is kept, their output is of its moment). A shape whose
skeleton fails to render, renders non-incrementally, or whose sentinels cannot be told apart from the
template's own text, is encoded the exact way too (which then names the row's error as before).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

from ftc.core.data.encode import DataError, Render, _renders, _spans, _trained_turns
from ftc.core.sandbox import TemplateLimit

Piece = str | int  # a literal piece of the rendered text, or the index of the message whose content goes there
Bound = tuple[int, int]  # a character position in the whole text: (pieces before it, characters into the next)

SHAPES_MAX = 4096  # shapes kept per template; past it new shapes take the exact path (bounds memory and cost)
_LOOP_ATTRS = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"})
_UNSTEADY = frozenset({"strftime_now", "lipsum"})  # globals whose output changes from one render to the next
_SENTINELS = (("\ue000", "\ue001"), ("\ue002", "\ue003"))  # two sets: a render with each must agree
_PRIVATE = re.compile("[\ue000-\ue003]")


class _NotOpaque(Exception):
    pass


class _Walk:
    """The syntax-tree walk: raises _NotOpaque at the first use of a content it cannot vouch for; sets
    `trims` when a content goes through `| trim`."""

    def __init__(self) -> None:
        self.trims = False

    def statements(self, body: Sequence[Any], scope: frozenset[str]) -> None:
        for node in body:
            self.statement(node, scope)

    def statement(self, node: Any, scope: frozenset[str]) -> None:
        from jinja2 import nodes

        kind = type(node)
        if kind is nodes.Output:
            for child in node.nodes:
                self.expr(child, scope, out=True)
        elif kind is nodes.If:
            self.expr(node.test, scope, out=False)
            self.statements(node.body, scope)
            for branch in node.elif_:
                self.statement(branch, scope)
            self.statements(node.else_, scope)
        elif kind is nodes.For:
            if node.recursive:
                raise _NotOpaque("recursive loop")
            self.bind(node.target, scope)
            inner = scope
            if type(node.iter) is nodes.Name and node.iter.name == "messages" and type(node.target) is nodes.Name:
                inner = scope | {node.target.name}
            else:
                self.expr(node.iter, scope, out=False)
            if node.test is not None:
                self.expr(node.test, inner, out=False)
            self.statements(node.body, inner)
            self.statements(node.else_, scope)
        elif kind is nodes.Assign:
            self.bind(node.target, scope)
            self.expr(node.node, scope, out=False)
        elif kind is nodes.ExprStmt:
            self.expr(node.node, scope, out=False)
        elif kind in (nodes.Continue, nodes.Break):
            pass
        elif kind is nodes.CallBlock and _is_generation(node):  # transformers' {% generation %}: its body, as is
            self.statements(node.body, scope)
        else:  # macros, filter/set blocks, includes, with, ...: not vouched for
            raise _NotOpaque(kind.__name__)

    def bind(self, target: Any, scope: frozenset[str]) -> None:
        from jinja2 import nodes

        if type(target) is nodes.Name:
            if target.name in scope or target.name in ("messages", "loop"):
                raise _NotOpaque(f"rebinds {target.name}")
        elif type(target) is nodes.Tuple:
            for item in target.items:
                self.bind(item, scope)
        elif type(target) is not nodes.NSRef:
            raise _NotOpaque(type(target).__name__)

    def expr(self, node: Any, scope: frozenset[str], out: bool) -> None:
        """`out`: the node's value goes to the output through concatenations only."""
        from jinja2 import nodes

        kind = type(node)
        key = _field(node, scope)
        if key is not None:  # a message's field
            if key == "content" and not out:
                raise _NotOpaque("content used other than copied out")
            self.message_index(node.node, scope)
        elif kind is nodes.Filter and node.name == "trim" and _no_arguments(node) \
                and _field(node.node, scope) == "content":
            if not out:
                raise _NotOpaque("trimmed content used other than copied out")
            self.trims = True
            self.message_index(node.node.node, scope)
        elif kind is nodes.Filter and node.name == "length" and _no_arguments(node) \
                and type(node.node) is nodes.Name and node.node.name == "messages":
            pass
        elif kind is nodes.Name:
            if node.name in scope or node.name in ("messages", "loop"):
                raise _NotOpaque(f"{node.name} used whole")
            if node.name in _UNSTEADY:
                raise _NotOpaque(f"{node.name}: a shape's render would be kept past its moment")
        elif kind is nodes.Getattr and type(node.node) is nodes.Name and node.node.name == "loop":
            if node.attr not in _LOOP_ATTRS:
                raise _NotOpaque(f"loop.{node.attr}")
        elif kind in (nodes.Add, nodes.Concat):
            for child in node.iter_child_nodes():
                self.expr(child, scope, out)
        elif kind in _EXPRESSIONS:
            for child in node.iter_child_nodes():
                self.expr(child, scope, out=False)
        else:
            raise _NotOpaque(kind.__name__)

    def message_index(self, message: Any, scope: frozenset[str]) -> None:
        """The index expression of `messages[i]` (a loop variable has none)."""
        from jinja2 import nodes

        if type(message) is nodes.Getitem:
            self.expr(message.arg, scope, out=False)


def _expressions() -> tuple[type, ...]:
    from jinja2 import nodes

    return (nodes.Const, nodes.TemplateData, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair, nodes.Keyword,
            nodes.CondExpr, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow, nodes.Not,
            nodes.Neg, nodes.Pos, nodes.And, nodes.Or, nodes.Compare, nodes.Operand, nodes.Filter, nodes.Test,
            nodes.Call, nodes.Getitem, nodes.Getattr, nodes.Slice, nodes.NSRef)


_EXPRESSIONS = _expressions()


def _is_generation(node: Any) -> bool:
    from jinja2 import nodes

    call = node.call
    return type(call) is nodes.Call and type(call.node) is nodes.ExtensionAttribute \
        and call.node.name == "_generation_support" and not call.args and not call.kwargs and not node.args


def _no_arguments(node: Any) -> bool:
    return not node.args and not node.kwargs and node.dyn_args is None and node.dyn_kwargs is None


def _message(node: Any, scope: frozenset[str]) -> bool:
    """A message: a loop variable over `messages`, or `messages[i]` (not a slice)."""
    from jinja2 import nodes

    if type(node) is nodes.Name:
        return node.name in scope
    return type(node) is nodes.Getitem and type(node.node) is nodes.Name and node.node.name == "messages" \
        and type(node.arg) is not nodes.Slice


def _field(node: Any, scope: frozenset[str]) -> str | None:
    """The key when node is `message['key']` or `message.key` with a constant key that is not a dict method
    (jinja falls back from one to the other); raises _NotOpaque for any other subscript of a message."""
    from jinja2 import nodes

    if type(node) not in (nodes.Getitem, nodes.Getattr) or not _message(node.node, scope):
        return None
    if type(node) is nodes.Getattr:
        key = node.attr
    else:
        key = node.arg.value if type(node.arg) is nodes.Const else None
    if type(key) is not str or hasattr(dict, key):
        raise _NotOpaque(f"message[{key!r}]")
    return key


def opacity(environment: Any, source: str) -> bool | None:
    """None when the template is not content-opaque, else whether it trims contents."""
    walk = _Walk()
    try:
        walk.statements(environment.parse(source).body, frozenset())
    except (_NotOpaque, RecursionError):
        return None
    except Exception:  # noqa: BLE001 - a template jinja cannot parse: the exact path reports it
        return None
    return walk.trims


class Shape:
    """A conversation shape's renders: the whole text as pieces, and each trained turn's (start, end)."""

    def __init__(self, pieces: list[Piece], turns: list[tuple[Bound, Bound]]) -> None:
        self.pieces, self.turns = pieces, turns

    def text_and_spans(self, contents: list[str]) -> tuple[str, list[tuple[int, int]]] | None:
        """The rendered text and the trained spans `encode._spans` gives for these contents; None where it
        raises (a turn of no characters): then the exact path names the error."""
        parts = [contents[p] if type(p) is int else p for p in self.pieces]
        at = list(accumulate(map(len, parts), initial=0))
        spans: list[tuple[int, int]] = []
        for (k0, o0), (k1, o1) in self.turns:
            start, end = at[k0] + o0, at[k1] + o1
            if end <= start:
                return None
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return "".join(parts), spans


class Skeletons:
    """Shapes of one template (rendered by `render(messages, generation)`), made on first sight."""

    def __init__(self, render: Callable[[list[dict[str, str]], bool], str], trims: bool, train_on: str) -> None:
        self.render, self.trims, self.train_on = render, trims, train_on
        self.shapes: dict[tuple[Any, ...], Shape | None] = {}

    def encode(self, messages: Sequence[dict[str, str]]) -> tuple[str, list[tuple[int, int]]] | None:
        """(text, spans) of a conversation of plain-string messages; None: take the exact path."""
        contents = []
        for m in messages:
            content = m.get("content")
            if type(content) is not str or (self.trims and content != content.strip()):
                return None
            contents.append(content)
        key = tuple(tuple((k, v) for k, v in m.items() if k != "content") for m in messages)
        if key not in self.shapes:
            if len(self.shapes) >= SHAPES_MAX:
                return None
            self.shapes[key] = self._shape(messages)
        shape = self.shapes[key]
        return None if shape is None else shape.text_and_spans(contents)

    def _shape(self, messages: Sequence[dict[str, str]]) -> Shape | None:
        try:
            (texts, parsed), (_, again) = (self._rendered(messages, marks) for marks in _SENTINELS)
        except TemplateLimit:  # the chunk's time bound: the caller encodes it again row by row
            raise
        except Exception:  # noqa: BLE001 - the template fails for this shape: the exact path names the row
            return None
        if parsed != again:  # the template's own text looked like a sentinel
            return None
        skeleton = [m | {"content": _sentinel(i, _SENTINELS[0])} for i, m in enumerate(messages)]
        try:
            _spans(skeleton, texts, self.train_on)  # the skeleton renders incrementally: so does every row
        except DataError:
            return None
        pieces = parsed[(len(messages), False)]
        starts = list(accumulate((len(_sentinel(p, _SENTINELS[0])) if type(p) is int else len(p) for p in pieces),
                                 initial=0))
        turns = []
        for _, start, end in _trained_turns(messages, self.train_on):
            bounds = [_bound(len(texts[r]) if r[0] else 0, starts, pieces) for r in (start, end)]
            if bounds[0] is None or bounds[1] is None:
                return None
            turns.append((bounds[0], bounds[1]))
        return Shape(pieces, turns)

    def _rendered(self, messages: Sequence[dict[str, str]],
                  marks: tuple[str, str]) -> tuple[dict[Render, str], dict[Render, list[Piece]]]:
        """The skeleton's renders with these sentinels, and each as pieces (sentinels as message indices);
        raises ValueError where the template's own text has sentinel characters."""
        skeleton = [m | {"content": _sentinel(i, marks)} for i, m in enumerate(messages)]
        texts = {r: self.render(skeleton[:r[0]], r[1]) for r in _renders(skeleton, self.train_on)}
        return texts, {r: _pieces(text, marks, len(messages)) for r, text in texts.items()}


def _pieces(text: str, marks: tuple[str, str], count: int) -> list[Piece]:
    pieces: list[Piece] = []
    for n, part in enumerate(re.split(f"{marks[0]}([0-9]+){marks[1]}", text)):
        if n % 2:
            if int(part) >= count:
                raise ValueError("a sentinel the template made itself")
            pieces.append(int(part))
        elif _PRIVATE.search(part):
            raise ValueError("the template's own text has sentinel characters")
        elif part:
            pieces.append(part)
    return pieces


def _sentinel(index: int, marks: tuple[str, str]) -> str:
    return f"{marks[0]}{index}{marks[1]}"


def _bound(position: int, starts: list[int], pieces: list[Piece]) -> Bound | None:
    """`position` of the skeleton as (pieces before, characters into the next); None inside a sentinel."""
    for k, begin in enumerate(starts):
        if begin == position:
            return (k, 0)
        if k + 1 < len(starts) and begin < position < starts[k + 1]:
            return None if type(pieces[k]) is int else (k, position - begin)
    return None
