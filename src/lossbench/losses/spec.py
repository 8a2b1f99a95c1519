"""Safe parsing of loss specs such as ``focal(gamma=2) + 0.5 * dice(smooth=1)``.

A spec string is parsed with :mod:`ast` and only a tiny grammar is accepted:
a sum of terms, each ``[number *] name[(key=value, ...)]``. Values are
numbers, strings, booleans (true / True), null / None, other bare words (read
as strings) and lists of those; a call in value position (``weight=effective(beta=0.999)``) is kept as
its text. Nothing is ever evaluated.

A spec may also be YAML structure: ``{name: focal, gamma: 2, weight: 1.0}`` or
a list of such mappings, summed.

Errors name the spec (or the term) and what is wrong; whoever knows where the
spec came from puts that in front (``exp.yaml: loss: ...``, see
:func:`lossbench.losses.build_loss`).
"""

from __future__ import annotations

import ast
import reprlib
from dataclasses import dataclass, field
from typing import Any

from lossbench.errors import UserError


@dataclass(frozen=True)
class Term:
    """One weighted loss in a spec: ``weight * name(**params)``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 3, 4, 4, 40

_WORDS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}


def _shown(spec: Any) -> str:
    """The spec for a message, cut short when it is absurdly long (a list of shared lists is never expanded)."""
    text = repr(spec) if isinstance(spec, str) else _SHORT.repr(spec)
    return text if len(text) <= 120 else f"{text[:100]}... ({len(text)} characters)"


def _fail(spec: str, why: str) -> UserError:
    return UserError(f"{_shown(spec)}: {why}; write e.g. 'focal(gamma=2) + 0.5 * dice'")


def _value(node: ast.AST, spec: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand, spec)
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Name):
        return _WORDS.get(node.id, node.id)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e, spec) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
        for kw in node.keywords:
            _value(kw.value, spec)
        return ast.unparse(node)
    raise _fail(spec, f"unsupported value {ast.unparse(node)!r}")


def _call(node: ast.AST, spec: str) -> Term:
    if isinstance(node, ast.Name):
        return Term(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.args:
            raise _fail(spec, f"{node.func.id}(...) takes keyword parameters only (name=value)")
        params = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise _fail(spec, "'**' is not allowed")
            params[kw.arg] = _value(kw.value, spec)
        return Term(node.func.id, params)
    raise _fail(spec, f"{ast.unparse(node)!r} is not a loss name or call")


def _number(node: ast.AST, spec: str) -> float | None:
    try:
        v = _value(node, spec)
    except UserError:
        return None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, (bool, str)) else None


def _terms(node: ast.AST, spec: str, sign: float = 1.0) -> list[Term]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        right_sign = sign if isinstance(node.op, ast.Add) else -sign
        return _terms(node.left, spec, sign) + _terms(node.right, spec, right_sign)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        for num, other in ((node.left, node.right), (node.right, node.left)):
            w = _number(num, spec)
            if w is not None:
                return [Term(t.name, t.params, t.weight * w) for t in _terms(other, spec, sign)]
        raise _fail(spec, "'*' needs a number on one side")
    if isinstance(node, ast.BinOp):
        raise _fail(spec, f"only '+', '-' and 'number *' combine losses, not {ast.unparse(node)!r}")
    term = _call(node, spec)
    return [Term(term.name, term.params, term.weight * sign)]


def _from_mapping(item: dict[str, Any], spec: Any) -> Term:
    params = dict(item)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"{_shown(spec)}: each loss mapping needs a 'name' key, e.g. {{name: focal, gamma: 2}}")
    weight = params.pop("weight", 1.0)
    if not isinstance(weight, (int, float)):
        raise UserError(f"{_shown(spec)}: 'weight' must be a number, got {weight!r}")
    return Term(name, params, float(weight))


#: the most terms a loss spec may sum (a list of aliases can otherwise stand for 10^9 of them)
MAX_TERMS = 64


def _too_many_terms(spec: Any) -> UserError:
    return UserError(f"{_shown(spec)}: sums more than {MAX_TERMS} losses; a loss spec sums a few")


def parse_spec(spec: str | dict[str, Any] | list[Any]) -> list[Term]:
    """The weighted terms of a loss spec (string, mapping, or list of strings / mappings); at most
    :data:`MAX_TERMS` of them."""
    if isinstance(spec, dict):
        return [_from_mapping(spec, spec)]
    if isinstance(spec, list):
        if not spec:
            raise UserError("[]: an empty list names no loss")
        terms: list[Term] = []
        for item in spec:
            if len(terms) >= MAX_TERMS:
                raise _too_many_terms(spec)
            try:
                terms += [_from_mapping(item, spec)] if isinstance(item, dict) else parse_spec(item)
            except RecursionError:
                raise _too_many_terms(spec) from None
        if len(terms) > MAX_TERMS:
            raise _too_many_terms(spec)
        return terms
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{_shown(spec)}: expected a loss spec such as 'ce' or 'focal(gamma=2) + 0.5 * dice'")
    try:
        tree = ast.parse(spec.strip(), mode="eval")
        terms = _terms(tree.body, spec)
    except SyntaxError as exc:
        raise _fail(spec, f"syntax error at column {exc.offset}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):  # NUL bytes; thousands of terms or parentheses
        raise _fail(spec, "not a loss spec (unreadable characters, or nested or summed far too deeply)") from None
    if len(terms) > MAX_TERMS:
        raise _too_many_terms(spec)
    return terms


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def format_spec(terms: list[Any]) -> str:
    """A spec string that :func:`lossbench.losses.spec.parse_spec` reads back as ``terms``."""
    text = ""
    for term in terms:
        call = term.name + (f"({', '.join(f'{k}={_literal(v)}' for k, v in term.params.items())})"
                            if term.params else "")
        weight = abs(term.weight)
        part = call if weight == 1 else f"{weight!r} * {call}"
        text = (f"-{part}" if term.weight < 0 else part) if not text else \
            f"{text} {'-' if term.weight < 0 else '+'} {part}"
    return text


def is_plain_loss(spec: Any, name: str) -> bool:
    """Whether ``spec`` is the loss ``name`` alone: one term, no parameters, weight 1 (``ce``, ``ce()``)."""
    try:
        terms = parse_spec(spec)
    except UserError:
        return False
    return len(terms) == 1 and terms[0].name == name and not terms[0].params and terms[0].weight == 1.0
