"""``multi`` graders' ``calculate_output``: a formula over the sub-graders' scores, never handed to ``eval``.

The formula is parsed with Python's own parser (``ast``) and only a whitelist of nodes is accepted: numbers, the
sub-graders' names, ``+ - * / ^`` (``^`` and ``**`` are powers, as in OpenAI's docs), unary minus, and the functions
OpenAI documents (``min``, ``max``, ``abs``, ``floor``, ``ceil``, ``exp``, ``sqrt``, ``log``). Anything else
(attributes, subscripts, comprehensions, other names, other calls) is a ``FormulaError`` naming what it met.
A whitelist of a dozen node types is smaller than a general sandboxed evaluator and cannot reach an object.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable, Mapping

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_LENGTH = 2000


class FormulaError(ValueError):
    """The formula cannot be parsed, or uses something not allowed (the message says what)."""


def parse(formula: str, names: Iterable[str]) -> ast.expr:
    """The checked expression tree; every variable must be one of ``names``."""
    if len(formula) > MAX_LENGTH:
        raise FormulaError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(formula.strip().replace("^", "**"), mode="eval").body  # ^ is a power, with its precedence
    except SyntaxError as err:
        raise FormulaError(f"not a formula ({err.msg})") from None
    known = set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in known and node.id not in FUNCTIONS:
                raise FormulaError(f"unknown name '{node.id}'; the graders are: {', '.join(sorted(known)) or 'none'}")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise FormulaError(f"only these functions may be called: {', '.join(FUNCTIONS)}")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise FormulaError(f"only numbers are allowed, not {node.value!r}")
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise FormulaError(f"operator {type(node.op).__name__} is not allowed; use + - * / ^")
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise FormulaError(f"operator {type(node.op).__name__} is not allowed")
        elif not isinstance(node, ast.Load | ast.operator | ast.unaryop):
            raise FormulaError(f"{type(node).__name__} is not allowed in a formula")
    return tree


def evaluate(formula: str | ast.expr, scores: Mapping[str, float]) -> float:
    """The formula's value for these scores. Arithmetic errors (a division by zero, log of 0) are FormulaError."""
    tree = parse(formula, scores) if isinstance(formula, str) else formula

    def value(node: ast.expr) -> float:
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int | float)  # parse() allows no other constant
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(scores[node.id])
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise FormulaError("exponent too large")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](value(node.operand))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return float(FUNCTIONS[node.func.id](*(value(a) for a in node.args)))

    try:
        result = value(tree)
    except (ArithmeticError, ValueError, TypeError) as err:  # 1/0, log(0), sqrt(-1), min() with no arguments
        raise FormulaError(f"cannot be computed for these scores: {err}") from None
    if isinstance(result, complex) or math.isnan(result):
        raise FormulaError("is not a real number for these scores")
    return float(result)
