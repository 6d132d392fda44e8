"""A tiny stand-in for ``helm template``: enough of Go templates + Sprig for Lagoon's chart.

Supported: ``{{ }}`` with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``; ``define``/``include``;
``if``/``else if``/``else``/``with``/``range`` (maps in key order, lists; ``$k, $v :=``) and
``end``; pipelines with ``|`` and parentheses; field chains on ``.``, ``$`` and variables; string
and integer literals; the functions ``include print printf quote default toYaml toJson nindent
indent trunc trimSuffix sha256sum not required``. Anything else raises ``TemplateError``, so a
chart edit that needs more fails the test loudly instead of rendering wrongly.

Missing values render as "" (Helm's behaviour). Numbers keep their Python type (Helm would turn
every number into float64; the chart passes large integers only through ``toJson``, which prints
them the same way in both).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    pass


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\d+)|(\|)|(\()|(\))|(:=)|(,)|([$.][\w.$]*|[A-Za-z_]\w*))')


@dataclass
class _Node:
    kind: str  # text | action | if | range | with
    text: str = ""
    pipe: list[Any] = field(default_factory=list)
    branches: list[tuple[list[Any] | None, list[_Node]]] = field(default_factory=list)
    vars: list[str] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _tokenize(src: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    src = src.strip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {src[pos:]!r}")
        tokens.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return tokens


def _parse_pipe(tokens: list[str]) -> list[Any]:
    """A pipeline as a list of commands; a command is a list of args (str tokens or sub-pipes)."""
    commands: list[list[Any]] = [[]]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "|":
            commands.append([])
        elif tok == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(tokens[j], 0)
                j += 1
            commands[-1].append(("sub", _parse_pipe(tokens[i + 1 : j - 1])))
            i = j
            continue
        else:
            commands[-1].append(tok)
        i += 1
    return commands


class Chart:
    """Renders a chart directory with given values (merged over values.yaml)."""

    def __init__(self, root: Path, release: str = "lagoon", namespace: str = "lagoon") -> None:
        self.root = root
        self.meta = yaml.safe_load((root / "Chart.yaml").read_text())
        self.defaults = yaml.safe_load((root / "values.yaml").read_text())
        self.release = {"Name": release, "Namespace": namespace, "Service": "Helm"}
        self.templates: dict[str, list[_Node]] = {}
        self.files: dict[str, list[_Node]] = {}
        for path in sorted((root / "templates").iterdir()):
            name = f"{self.meta['name']}/templates/{path.name}"
            nodes = self._parse(path.read_text())
            self.files[name] = nodes

    # -- parsing ------------------------------------------------------------------------------

    def _parse(self, text: str) -> list[_Node]:
        pieces: list[tuple[str, str]] = []  # ("text", s) | ("action", src)
        pos = 0
        for m in _ACTION.finditer(text):
            before = text[pos : m.start()]
            if m.group(1):
                before = before.rstrip()
            pieces.append(("text", before))
            pieces.append(("action", m.group(2)))
            pos = m.end()
            if m.group(3):
                rest = text[pos:]
                pos += len(rest) - len(rest.lstrip())
        pieces.append(("text", text[pos:]))
        nodes, _ = self._block(pieces, 0, top=True)
        return nodes

    def _block(self, pieces: list[tuple[str, str]], i: int, top: bool = False) -> tuple[list[_Node], int]:
        out: list[_Node] = []
        while i < len(pieces):
            kind, src = pieces[i]
            if kind == "text":
                if src:
                    out.append(_Node("text", text=src))
                i += 1
                continue
            if src.startswith("/*"):
                i += 1
                continue
            word = src.split(None, 1)[0] if src else ""
            if word in ("end", "else"):
                if top:
                    raise TemplateError(f"unexpected {{{{ {src} }}}}")
                return out, i
            if word == "define":
                name = json.loads(src.split(None, 1)[1])
                body, i = self._block(pieces, i + 1)
                self.templates[name] = body
                i += 1
                continue
            if word == "if":
                node = _Node("if")
                cond: list[Any] | None = _parse_pipe(_tokenize(src[2:]))
                while True:
                    body, i = self._block(pieces, i + 1)
                    node.branches.append((cond, body))
                    end = pieces[i][1]
                    if end == "end":
                        break
                    rest = end[4:].strip()
                    cond = _parse_pipe(_tokenize(rest[2:])) if rest.startswith("if") else None
                out.append(node)
                i += 1
                continue
            if word in ("range", "with"):
                tokens = _tokenize(src[len(word) :])
                node = _Node(word)
                if ":=" in tokens:
                    at = tokens.index(":=")
                    node.vars = [t for t in tokens[:at] if t != ","]
                    tokens = tokens[at + 1 :]
                node.pipe = _parse_pipe(tokens)
                node.body, i = self._block(pieces, i + 1)
                if pieces[i][1] == "else":
                    node.orelse, i = self._block(pieces, i + 1)
                out.append(node)
                i += 1
                continue
            out.append(_Node("action", pipe=_parse_pipe(_tokenize(src))))
            i += 1
        if not top:
            raise TemplateError("missing {{ end }}")
        return out, i

    # -- evaluation ---------------------------------------------------------------------------

    def render(self, values: dict[str, Any] | None = None) -> dict[str, str]:
        """Rendered text of every template file (``_*`` helpers omitted), by file name."""
        merged = _merge(self.defaults, values or {})
        root = {
            "Values": merged,
            "Release": self.release,
            "Chart": {
                "Name": self.meta["name"],
                "Version": self.meta["version"],
                "AppVersion": self.meta["appVersion"],
            },
            "Template": {"BasePath": f"{self.meta['name']}/templates"},
        }
        self._root = root
        return {
            name: self._run(nodes, root, {"$": root})
            for name, nodes in self.files.items()
            if not name.rsplit("/", 1)[-1].startswith("_")
        }

    def _run(self, nodes: list[_Node], dot: Any, env: dict[str, Any]) -> str:
        out: list[str] = []
        for n in nodes:
            if n.kind == "text":
                out.append(n.text)
            elif n.kind == "action":
                out.append(_show(self._pipe(n.pipe, dot, env)))
            elif n.kind == "if":
                for cond, body in n.branches:
                    if cond is None or _truthy(self._pipe(cond, dot, env)):
                        out.append(self._run(body, dot, env))
                        break
            elif n.kind == "with":
                value = self._pipe(n.pipe, dot, env)
                if _truthy(value):
                    out.append(self._run(n.body, value, env))
                else:
                    out.append(self._run(n.orelse, dot, env))
            elif n.kind == "range":
                value = self._pipe(n.pipe, dot, env)
                items = sorted(value.items()) if isinstance(value, dict) else list(enumerate(value or []))
                if not items:
                    out.append(self._run(n.orelse, dot, env))
                for key, item in items:
                    scope = dict(env)
                    if len(n.vars) == 2:
                        scope[n.vars[0]], scope[n.vars[1]] = key, item
                    elif len(n.vars) == 1:
                        scope[n.vars[0]] = item
                    out.append(self._run(n.body, item, scope))
        return "".join(out)

    def _pipe(self, commands: list[Any], dot: Any, env: dict[str, Any]) -> Any:
        result: Any = _NOTHING
        for command in commands:
            result = self._command(command, dot, env, result)
        return result

    def _command(self, args: list[Any], dot: Any, env: dict[str, Any], piped: Any) -> Any:
        head = args[0]
        if (
            isinstance(head, str)
            and re.fullmatch(r"[A-Za-z_]\w*", head)
            and head not in ("true", "false", "nil")
        ):
            params = [self._arg(a, dot, env) for a in args[1:]]
            if piped is not _NOTHING:
                params.append(piped)
            return self._call(head, params)
        if len(args) != 1 or piped is not _NOTHING:
            raise TemplateError(f"cannot evaluate {args!r}")
        return self._arg(head, dot, env)

    def _arg(self, arg: Any, dot: Any, env: dict[str, Any]) -> Any:
        if isinstance(arg, tuple):
            return self._pipe(arg[1], dot, env)
        if arg.startswith('"'):
            return json.loads(arg)
        if arg.isdigit():
            return int(arg)
        if arg in ("true", "false"):
            return arg == "true"
        if arg == "nil":
            return None
        if arg == ".":
            return dot
        if arg.startswith("$"):
            name, _, path = arg.partition(".")
            if name not in env:
                raise TemplateError(f"undefined variable {name}")
            return _get(env[name], path)
        if arg.startswith("."):
            return _get(dot, arg[1:])
        raise TemplateError(f"unknown argument {arg!r}")

    def _call(self, name: str, a: list[Any]) -> Any:
        if name == "include":
            if a[0] in self.templates:
                return self._run(self.templates[a[0]], a[1], {"$": self._root})
            if a[0] in self.files:
                return self._run(self.files[a[0]], a[1], {"$": self._root})
            raise TemplateError(f"no template {a[0]!r}")
        simple = {
            "print": lambda *x: "".join(_show(v) for v in x),
            "printf": lambda fmt, *x: fmt.replace("%v", "%s") % tuple(_show(v) for v in x),
            "quote": lambda *x: " ".join(json.dumps(_show(v)) for v in x),
            "default": lambda d, v=None: v if _truthy(v) else d,
            "toYaml": lambda v: (
                yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")
                if v is not None
                else "null"
            ),
            "toJson": lambda v: json.dumps(v, separators=(",", ":")),
            "nindent": lambda n, s: "\n" + _indent(n, s),
            "indent": _indent,
            "trunc": lambda n, s: s[:n],
            "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
            "sha256sum": lambda s: hashlib.sha256(s.encode()).hexdigest(),
            "not": lambda v: not _truthy(v),
            "required": _required,
        }
        if name not in simple:
            raise TemplateError(f"function {name!r} is not supported by helm_lite")
        return simple[name](*a)


_NOTHING = object()


def _required(message: str, value: Any) -> Any:
    if not _truthy(value):
        raise TemplateError(message)
    return value


def _indent(n: int, s: str) -> str:
    return "\n".join(" " * n + line for line in str(s).split("\n"))


def _get(value: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _truthy(value: Any) -> bool:
    return value is not _NOTHING and bool(value)


def _show(value: Any) -> str:
    if value is None or value is _NOTHING:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base.get(k), v)
        return out
    return override


def documents(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Every non-empty YAML document of the rendered ``.yaml`` files, with its file name."""
    out = []
    for name, text in rendered.items():
        if not name.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((name, doc))
    return out
