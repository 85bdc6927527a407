"""A renderer for the subset of Go's text/template that Ollama Modelfile templates use, for the tests.

Supported: text; {{ .Field }} {{ $var }} {{ $.Field }}; {{ $v := X }} and {{ $v = X }} (assignment reaches the
declaring scope, as in Go >= 1.11); {{ range X }}...{{ end }} (dot becomes each element); {{ if X }},
{{ else if X }}, {{ else }}, {{ end }}; the functions eq, ne, and, or, not; "string" literals, true, false;
{{- and -}} trim the whitespace next to them. Truth follows Go: false, 0, "", nil and empty lists are false.
Anything else raises, so a template that leaves the subset fails the test instead of rendering wrongly.
"""

from __future__ import annotations

import re
import shlex

ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.DOTALL)


def _tokens(template: str):
    """[("text", s) | ("action", s)], with the trim markers applied to the neighbouring text."""
    out, position, trim_next = [], 0, False
    for match in ACTION.finditer(template):
        text = template[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", match.group(2)))
        trim_next, position = bool(match.group(3)), match.end()
    text = template[position:]
    out.append(("text", text.lstrip() if trim_next else text))
    return out


def _parse(tokens, i=0, stop=("end",), top=False):
    """A list of nodes up to a stop keyword; returns (nodes, index of the stop action, the stop action)."""
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        word = value.split(" ", 1)[0]
        if word in stop and not top:
            return nodes, i, value
        if word == "range":
            body, i, _ = _parse(tokens, i + 1)
            nodes.append(("range", value[len("range") :].strip(), body))
            i += 1
        elif word == "if":
            branches, condition = [], value[len("if") :].strip()
            while True:
                body, i, closing = _parse(tokens, i + 1, stop=("end", "else"))
                branches.append((condition, body))
                if closing == "end":
                    break
                rest = closing[len("else") :].strip()
                condition = rest[len("if") :].strip() if rest.startswith("if") else "true"
            nodes.append(("if", branches))
            i += 1
        elif word in ("end", "else"):
            raise ValueError(f"unexpected {{{{ {value} }}}}")
        else:
            nodes.append(("action", value))
            i += 1
    if not top:
        raise ValueError("unclosed block")
    return nodes, i, None


def _truth(value) -> bool:
    return value not in (False, 0, "", None) and value != []


class _Scope:
    def __init__(self, parent=None):
        self.values, self.parent = {}, parent

    def find(self, name):
        scope = self
        while scope is not None:
            if name in scope.values:
                return scope
            scope = scope.parent
        raise NameError(f"undefined variable {name}")


def _operand(word: str, dot, root, scope):
    if word.startswith('"'):
        return shlex.split(word)[0]
    if word in ("true", "false"):
        return word == "true"
    if word.startswith("$."):
        return root[word[2:]]
    if word.startswith("$"):
        return scope.find(word).values[word]
    if word.startswith("."):
        return dot[word[1:]]
    raise ValueError(f"unsupported operand {word!r}")


FUNCTIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "and": lambda *xs: next((x for x in xs if not _truth(x)), xs[-1]),
    "or": lambda *xs: next((x for x in xs if _truth(x)), xs[-1]),
    "not": lambda x: not _truth(x),
}


def _evaluate(expression: str, dot, root, scope):
    words = shlex.split(expression, posix=False)
    if words[0] in FUNCTIONS:
        return FUNCTIONS[words[0]](*(_operand(w, dot, root, scope) for w in words[1:]))
    if len(words) != 1:
        raise ValueError(f"unsupported expression {expression!r}")
    return _operand(words[0], dot, root, scope)


def _render(nodes, dot, root, scope) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "range":
            for item in _evaluate(node[1], dot, root, scope):
                out.append(_render(node[2], item, root, _Scope(scope)))
        elif node[0] == "if":
            for condition, body in node[1]:
                if _truth(_evaluate(condition, dot, root, scope)):
                    out.append(_render(body, dot, root, _Scope(scope)))
                    break
        else:
            action = node[1]
            if match := re.fullmatch(r"(\$\w+)\s*(:?=)\s*(.+)", action):
                name, operator, expression = match.groups()
                value = _evaluate(expression, dot, root, scope)
                (scope if operator == ":=" else scope.find(name)).values[name] = value
            else:
                value = _evaluate(action, dot, root, scope)
                out.append("" if value is None else str(value))
    return "".join(out)


def render(template: str, data: dict) -> str:
    nodes, _, _ = _parse(_tokens(template), top=True)
    return _render(nodes, data, data, _Scope())
