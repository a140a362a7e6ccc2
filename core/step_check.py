"""Arithmetic statements in a response (`a op b = c`), found and checked.

This is how the critic's training labels know whether the *work* is right, not only the
final answer. Statements are parsed by a small tokenizer and evaluated with exact
fractions: model text is never passed to eval or a CAS parser.

Forms read: `12 + 7 = 19`, `12 apples + 7 apples = 19 apples`, `$3 x $4 = $12`,
`3 × 4 + 2 = 14` (several operations, usual precedence), `48/2 = 24`, `1,200 - 200 = 1,000`,
`\\times`/`\\div`/`\\cdot`, chains `12 + 7 = 19 + 3 = 22` (two statements) and GSM8K's
`<<48/2=24>>` annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

OPS = {"+": "+", "-": "-", "\u2212": "-", "x": "*", "X": "*", "\u00d7": "*", "*": "*", "\u00b7": "*",
       "\\times": "*", "\\cdot": "*", "/": "/", "\u00f7": "/", "\\div": "/"}
MAX_UNIT_WORDS = 2  # words allowed between a number and its operator ("7 red apples +")
MAX_STATEMENTS = 20  # a response with more is not one we learn from anyway

_TOKEN_RE = re.compile(
    r"(?P<num>\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
    r"|(?P<op>\\times|\\cdot|\\div|[+\u2212\u00d7*\u00b7/\u00f7]|-(?!\d*[A-Za-z]))"
    r"|(?P<eq>=)"
    r"|(?P<word>[A-Za-z]+)"
    r"|(?P<sep>[\n;:!?()\[\]]|\.(?!\d)|,(?!\d{3}))",
)


@dataclass(frozen=True)
class Statement:
    """One `lhs = claimed` found in a text; `span` is where `claimed` stands."""

    operands: tuple[Fraction, ...]
    ops: tuple[str, ...]  # normalised: + - * /
    claimed: Fraction
    span: tuple[int, int]
    text: str

    @property
    def value(self) -> Fraction | None:
        return evaluate(self.operands, self.ops)

    @property
    def true(self) -> bool:
        v = self.value
        return v is not None and close_enough(v, self.claimed, self.text.rsplit("=", 1)[-1])

    @property
    def shape(self) -> tuple:
        """Operation and operands, order-free where the operation allows (a+b = b+a)."""
        if len(self.ops) == 1 and self.ops[0] in "+*":
            return self.ops, tuple(sorted(self.operands))
        return self.ops, self.operands


def to_number(tok: str) -> Fraction:
    return Fraction(tok.lstrip("$").replace(",", ""))


def evaluate(operands: tuple[Fraction, ...], ops: tuple[str, ...]) -> Fraction | None:
    """Usual precedence: * and / first, left to right. None on division by zero."""
    terms: list[Fraction] = [operands[0]]
    signs: list[str] = []
    for op, x in zip(ops, operands[1:]):
        if op == "*":
            terms[-1] *= x
        elif op == "/":
            if x == 0:
                return None
            terms[-1] /= x
        else:
            signs.append(op)
            terms.append(x)
    total = terms[0]
    for s, t in zip(signs, terms[1:]):
        total = total + t if s == "+" else total - t
    return total


def close_enough(value: Fraction, claimed: Fraction, claimed_text: str) -> bool:
    """Exact, or right when rounded to the claimed number's decimals (10/3 = 3.33)."""
    if value == claimed:
        return True
    m = re.search(r"\.(\d+)", claimed_text)
    if not m:
        return False
    return abs(value - claimed) <= Fraction(1, 2 * 10 ** len(m.group(1)))


def _tokens(text: str) -> list[tuple[str, str, int, int]]:
    return [(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def find_statements(text: str) -> list[Statement]:
    """Every `expression = number` in reading order (at most MAX_STATEMENTS)."""
    if not isinstance(text, str):
        return []
    text = re.sub(r"<<([^<>]*)>>", lambda m: " " * (len(m.group(0)) - len(m.group(1)) - 2) + f" {m.group(1)} ",
                  text)  # keep offsets: the annotation's content stays where it was
    toks = _tokens(text)
    out: list[Statement] = []
    i = 0
    while i < len(toks) and len(out) < MAX_STATEMENTS:
        st, nxt = _statement_at(toks, i, text)
        if st is not None:
            out.append(st)
        i = nxt
    return out


def _skip_units(toks, j: int) -> int:
    k = j
    while k < len(toks) and toks[k][0] == "word" and toks[k][1] not in ("x", "X") and k - j < MAX_UNIT_WORDS:
        k += 1
    return k


def _statement_at(toks, i: int, text: str) -> tuple[Statement | None, int]:
    """Parse `num (op num)+ = num` from token i; return it and where to go on."""
    if toks[i][0] != "num":
        return None, i + 1
    start = toks[i][2]
    operands, ops = [to_number(toks[i][1])], []
    j = i + 1
    while True:
        k = _skip_units(toks, j)
        if k < len(toks) and (toks[k][0] == "op" or toks[k][1] in ("x", "X")) and k + 1 < len(toks) \
                and toks[k + 1][0] == "num":
            ops.append(OPS[toks[k][1]])
            operands.append(to_number(toks[k + 1][1]))
            j = k + 2
            continue
        break
    k = _skip_units(toks, j)
    if not ops or k + 1 >= len(toks) or toks[k][0] != "eq":
        return None, max(j, i + 1)
    sign = toks[k + 1][1] == "-" and k + 2 < len(toks) and toks[k + 2][2] == toks[k + 1][3]
    c = k + 1 + sign
    if c >= len(toks) or toks[c][0] != "num":
        return None, max(j, i + 1)
    _, claim, c0, c1 = toks[c]
    value = -to_number(claim) if sign else to_number(claim)
    st = Statement(tuple(operands), tuple(ops), value, (c0 + (claim[0] == "$"), c1), text[start:c1])
    return st, c + sign  # the claimed number may start a chained statement ("= 19 + 3 = 22")


def question_numbers(question: str) -> set[Fraction]:
    """Quantities a problem gives (with number words such as 'twice' left aside)."""
    return {to_number(t[1]) for t in _tokens(question) if t[0] == "num"}
