"""Glob patterns (Rust globset syntax, turbopuffer's ``Glob``/``IGlob``) compiled to anchored RE2
regexes, and the cheaper equals/prefix/suffix/substring forms a literal glob reduces to."""

from __future__ import annotations

import string
from typing import Any, TypeAlias

from lagoon.errors import InvalidRequest
from lagoon.index.filters.ops import json_snippet

# --------------------------------------------------------------------------------------------
# Glob (Rust globset syntax) -> RE2
# --------------------------------------------------------------------------------------------

_PUNCT = frozenset(string.punctuation) - {"_"}
_LIT, _ANY, _ZOM, _RPREFIX, _RSUFFIX, _RZOM, _CLASS, _ALT = range(8)
_Token: TypeAlias = tuple[Any, ...]


def _re_escape(c: str) -> str:
    return "\\" + c if c in _PUNCT else c


class _GlobParser:
    """A port of globset's parser (default options: ``*`` and ``?`` cross ``/``, ``\\`` escapes)."""

    def __init__(self, glob: str, where: str) -> None:
        self.glob = glob
        self.where = where
        self.chars = glob
        self.i = 0
        self.prev: str | None = None
        self.cur: str | None = None
        self.stack: list[int] = []
        self.branches: list[list[_Token]] = [[]]

    def error(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"{self.where}: invalid glob pattern {json_snippet(self.glob)}: {what}")

    def bump(self) -> str | None:
        self.prev = self.cur
        self.cur = self.chars[self.i] if self.i < len(self.chars) else None
        if self.cur is not None:
            self.i += 1
        return self.cur

    def peek(self) -> str | None:
        return self.chars[self.i] if self.i < len(self.chars) else None

    def push(self, tok: _Token) -> None:
        self.branches[-1].append(tok)

    def parse(self) -> list[_Token]:
        while (c := self.bump()) is not None:
            if c == "?":
                self.push((_ANY,))
            elif c == "*":
                self.star()
            elif c == "[":
                self.klass()
            elif c == "{":
                self.stack.append(len(self.branches))
                self.branches.append([])
            elif c == "}":
                if not self.stack:
                    raise self.error("'}' without a matching '{'")
                start = self.stack.pop()
                alts = self.branches[start:]
                del self.branches[start:]
                self.push((_ALT, alts))
            elif c == "," and self.stack:
                self.branches.append([])
            elif c == "\\":
                nxt = self.bump()
                if nxt is None:
                    raise self.error("dangling '\\' at the end")
                self.push((_LIT, nxt))
            else:
                self.push((_LIT, c))
        if len(self.branches) > 1:
            raise self.error("'{' without a matching '}'")
        return self.branches[0]

    def star(self) -> None:
        prev = self.prev
        if self.peek() != "*":
            self.push((_ZOM,))
            return
        self.bump()
        if not self.branches[-1]:
            if self.peek() not in (None, "/"):
                self.push((_ZOM,))
                self.push((_ZOM,))
            else:
                self.push((_RPREFIX,))
                self.bump()
            return
        if prev != "/" and (len(self.branches) <= 1 or prev not in (",", "{")):
            self.push((_ZOM,))
            self.push((_ZOM,))
            return
        nxt = self.peek()
        if nxt is None or (nxt in (",", "}") and len(self.branches) >= 2):
            is_suffix = True
        elif nxt == "/":
            self.bump()
            is_suffix = False
        else:
            self.push((_ZOM,))
            self.push((_ZOM,))
            return
        last = self.branches[-1].pop()
        if last[0] in (_RPREFIX, _RSUFFIX):
            self.push(last)
        else:
            self.push((_RSUFFIX,) if is_suffix else (_RZOM,))

    def klass(self) -> None:
        negated = False
        if self.peek() in ("!", "^"):
            self.bump()
            negated = True
        ranges: list[tuple[str, str]] = []
        first, in_range = True, False
        while True:
            c = self.bump()
            if c is None:
                raise self.error("'[' without a matching ']'")
            if c == "]" and not first:
                break
            if c == "-" and not first:
                if in_range:
                    self.extend_range(ranges, "-")
                    in_range = False
                else:
                    in_range = True
            elif in_range:
                self.extend_range(ranges, c)
                in_range = False
            else:
                ranges.append((c, c))
            first = False
        if in_range:
            ranges.append(("-", "-"))
        self.push((_CLASS, negated, ranges))

    def extend_range(self, ranges: list[tuple[str, str]], end: str) -> None:
        start = ranges[-1][0]
        if end < start:
            raise self.error(f"invalid range {start}-{end}")
        ranges[-1] = (start, end)


def _tokens_to_regex(tokens: list[_Token]) -> str:
    out: list[str] = []
    for tok in tokens:
        kind = tok[0]
        if kind == _LIT:
            out.append(_re_escape(tok[1]))
        elif kind == _ANY:
            out.append(".")
        elif kind == _ZOM:
            out.append(".*")
        elif kind == _RPREFIX:
            out.append("(?:/?|.*/)")
        elif kind == _RSUFFIX:
            out.append("/.*")
        elif kind == _RZOM:
            out.append("(?:/|/.*/)")
        elif kind == _CLASS:
            body = "".join(_re_escape(a) if a == b else f"{_re_escape(a)}-{_re_escape(b)}" for a, b in tok[2])
            out.append("[" + ("^" if tok[1] else "") + body + "]")
        else:
            parts = [p for p in (_tokens_to_regex(branch) for branch in tok[1]) if p]
            if parts:
                out.append("(?:" + "|".join(parts) + ")")
    return "".join(out)


def glob_to_regex(pattern: str, *, case_insensitive: bool = False, where: str = "filters") -> str:
    """The RE2 regex, anchored at both ends, that matches what globset's ``pattern`` matches.

    ``*`` any run of characters (``/`` and newlines included), ``?`` one character, ``[abc]``,
    ``[a-z]``, ``[!abc]``/``[^abc]``, ``{a,b}`` (nestable), ``**`` path forms, ``\\`` escapes.
    Raises InvalidRequest for an unclosed ``[``/``{``, a stray ``}``, a bad range or a dangling ``\\``.
    """
    tokens = _GlobParser(pattern, where).parse()
    body = ".*" if tokens == [(_RPREFIX,)] else _tokens_to_regex(tokens)
    return "(?s" + ("i" if case_insensitive else "") + ")^" + body + "$"


def glob_fast_path(pattern: str, where: str) -> tuple[str, str] | None:
    """What a case-sensitive glob of literals and at most a leading and a trailing ``*`` reduces to."""
    tokens = _GlobParser(pattern, where).parse()
    lead = bool(tokens) and tokens[0] == (_ZOM,)
    trail = len(tokens) > int(lead) and tokens[-1] == (_ZOM,)
    body = tokens[int(lead) : len(tokens) - int(trail)]
    if any(t[0] != _LIT for t in body):
        return None
    text = "".join(t[1] for t in body)
    kind = {
        (False, False): "equals",
        (False, True): "prefix",
        (True, False): "suffix",
        (True, True): "substring",
    }
    return kind[(lead, trail)], text
