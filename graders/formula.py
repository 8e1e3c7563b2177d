"""The ``calculate_output`` formula of a multi grader, parsed and evaluated without ``eval``.

OpenAI's grammar: numbers, the sub-graders' keys, parentheses, ``+ - * /``, ``^`` for power, and
the functions ``min max abs floor ceil exp sqrt log`` (``min``/``max`` take one or more arguments).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": lambda *values: min(values),
    "max": lambda *values: max(values),
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
_ARITY = {"min": None, "max": None}  # any number >= 1; the others take exactly one
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*)|(.))"
)


class FormulaError(Exception):
    """A formula that does not parse, or names what is not a sub-grader."""


@dataclass(frozen=True)
class Formula:
    """A parsed formula: ``evaluate`` computes it from the sub-graders' scores."""

    text: str
    _tree: object

    @classmethod
    def parse(cls, text: str, names: Collection[str]) -> Formula:
        parser = _Parser(text, set(names))
        tree = parser.expression()
        if parser.peek() is not None:
            raise FormulaError(f"unexpected {parser.peek()!r} in {text!r}")
        return cls(text, tree)

    def evaluate(self, scores: Mapping[str, float]) -> float:
        """The formula's value; ArithmeticError/ValueError for a division by zero and the like."""
        return float(_evaluate(self._tree, scores))


def _evaluate(node: object, scores: Mapping[str, float]) -> float:
    assert isinstance(node, tuple)
    kind, parts = node[0], node[1:]
    if kind == "number":
        return float(parts[0])
    if kind == "name":
        return float(scores[parts[0]])
    if kind == "negate":
        return -_evaluate(parts[0], scores)
    if kind == "call":
        name, arguments = parts
        return float(FUNCTIONS[name](*(_evaluate(a, scores) for a in arguments)))
    left, right = (_evaluate(p, scores) for p in parts[1:])
    operator = parts[0]
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    if operator == "/":
        return left / right
    return float(left**right)


class _Parser:
    """Recursive descent: sum := product (('+'|'-') product)*; product := unary (('*'|'/') unary)*;
    unary := '-' unary | power; power := atom ('^' unary)?  (right-associative)."""

    def __init__(self, text: str, names: set[str]) -> None:
        self.text = text
        self.names = names
        self.tokens: list[tuple[str, str]] = []
        for match in _TOKEN.finditer(text):
            number, word, symbol = match.groups()
            if number is not None:
                self.tokens.append(("number", number))
            elif word is not None:
                self.tokens.append(("word", word))
            elif symbol is not None and not symbol.isspace():
                if symbol not in "+-*/^(),":
                    raise FormulaError(f"unexpected {symbol!r} in {text!r}")
                self.tokens.append(("symbol", symbol))
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise FormulaError(f"{self.text!r} ends too early")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect(self, symbol: str) -> None:
        kind, value = self.take()
        if (kind, value) != ("symbol", symbol):
            raise FormulaError(f"expected {symbol!r}, found {value!r} in {self.text!r}")

    def expression(self) -> object:
        node = self.product()
        while self.peek() in ("+", "-"):
            node = ("binary", self.take()[1], node, self.product())
        return node

    def product(self) -> object:
        node = self.unary()
        while self.peek() in ("*", "/"):
            node = ("binary", self.take()[1], node, self.unary())
        return node

    def unary(self) -> object:
        if self.peek() == "-":
            self.take()
            return ("negate", self.unary())
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> object:
        node = self.atom()
        if self.peek() == "^":
            self.take()
            node = ("binary", "^", node, self.unary())
        return node

    def atom(self) -> object:
        kind, value = self.take()
        if kind == "number":
            return ("number", float(value))
        if kind == "word":
            if self.peek() == "(":
                return self.call(value)
            if value not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                raise FormulaError(f"{value!r} is not a grader of this multi grader ({known})")
            return ("name", value)
        if value == "(":
            node = self.expression()
            self.expect(")")
            return node
        raise FormulaError(f"unexpected {value!r} in {self.text!r}")

    def call(self, name: str) -> object:
        if name not in FUNCTIONS:
            raise FormulaError(f"{name!r} is not a function: use {', '.join(FUNCTIONS)}")
        self.expect("(")
        arguments = [self.expression()]
        while self.peek() == ",":
            self.take()
            arguments.append(self.expression())
        self.expect(")")
        if name not in _ARITY and len(arguments) != 1:
            raise FormulaError(f"{name}() takes one argument, got {len(arguments)}")
        return ("call", name, tuple(arguments))
