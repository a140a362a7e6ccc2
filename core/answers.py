"""Final-answer extraction and equivalence checking.

Model output is untrusted text. We never eval or sympify it: extraction is plain
string scanning, and equivalence goes through math-verify, which runs in a separate
worker process with our own per-item deadline. math-verify's own timeouts rely on
SIGALRM, which only works on a main thread (inside Ray actors or threads it raises
or is silently ignored), so we turn them off and kill the worker on overrun.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import threading
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

CheckVerdict = Literal["correct", "incorrect", "unparseable"]

# Only the tail of a response can hold its final answer; bounding what we scan keeps
# megabyte-sized outputs cheap and keeps pathological input away from the parser.
MAX_SCAN_CHARS = 4000
MAX_ANSWER_CHARS = 200

# Commas only as thousands separators: "1,000" is one number, "1,2,3" is three.
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_HASH_RE = re.compile(r"####\s*([^\n]+)")
# Optional math delimiters around the answer are $, $$, \( \) or \[ \] (a lone
# backslash is not one: it starts a LaTeX command such as \frac).
# Whitespace runs are matched possessively (*+) and the answer must end on a
# non-space character, so no run of spaces can be split between neighbouring
# quantifiers: with plain \s* a line such as "answer:" + 40 spaces + "x" + 40 spaces
# + "$y" backtracked for minutes (polynomial blow-up), outside the checker's deadline.
# Between the answer and its terminator only same-line spaces count, as a newline is
# itself a terminator.
_ANSWER_IS_RE = re.compile(
    r"answer\s*+(?:is|:|=)\s*+:?\s*+(?:\$\$?|\\\(|\\\[)?+\s*+([^\n$]*?[^\s$])"
    r"[^\S\n]*+(?:\$\$?|\\\)|\\\])?[^\S\n]*+(?:\.\s|\.?$|\n)",
    re.IGNORECASE,
)
_LAST_NUMBER_RE = re.compile(_NUMBER)


@dataclass(frozen=True)
class AnswerCheck:
    verdict: CheckVerdict
    reason: str
    extracted: str = ""


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) whose braces balance.

    One pass pairs every brace (a stack of open positions), so unbalanced input such
    as thousands of "\\boxed{" costs linear time, not quadratic.
    """
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    close_of: dict[int, int] = {}  # index after an opening brace -> index of its closing brace
    stack: list[int] = []
    for i, c in enumerate(text):
        if c == "{":
            stack.append(i + 1)
        elif c == "}" and stack:
            close_of[stack.pop()] = i
    for s in reversed(starts):
        if s in close_of:
            return text[s : close_of[s]]
    return None


def _too_long(ans: str, how: str) -> tuple[str, str] | None:
    # A truncated answer could turn a wrong answer into a "correct" prefix: refuse it.
    if len(ans) > MAX_ANSWER_CHARS:
        return "", f"final answer ({how}) is longer than {MAX_ANSWER_CHARS} characters"
    return None


def extract_final_answer(text: str) -> tuple[str, str]:
    """Return (answer, how) where how names the rule that matched, or ("", reason)."""
    if not isinstance(text, str) or not text.strip():
        return "", "empty response"
    tail = text.rstrip()[-MAX_SCAN_CHARS:]  # trailing whitespace must not push the answer out
    boxed = _last_boxed(tail)
    if boxed is not None and boxed.strip():
        return _too_long(boxed.strip(), "boxed") or (boxed.strip(), "boxed")
    hashes = _HASH_RE.findall(tail)
    if hashes and hashes[-1].strip():
        return _too_long(hashes[-1].strip(), "####") or (hashes[-1].strip(), "####")
    said = _ANSWER_IS_RE.findall(tail)
    if said:
        ans = said[-1].strip().rstrip(".").strip()
        if ans:
            return _too_long(ans, "answer-is") or (ans, "answer-is")
    nums = _LAST_NUMBER_RE.findall(tail)
    if nums:
        return _too_long(nums[-1], "last-number") or (nums[-1], "last-number")
    return "", "no answer found in the last %d characters" % MAX_SCAN_CHARS


# Rules that find an answer the response stated as final; "last-number" only guesses one.
_STATED = frozenset({"boxed", "####", "answer-is"})


def looping(text: str, repeats: int = 3, min_span: int = 60, max_period: int = 200) -> bool:
    """True when the text ends in one piece repeated at least `repeats` times over `min_span` chars.

    Greedy decoding of a small model can fall into such a loop; no token budget would let
    it finish, so a loop cut off by the budget says nothing about the budget (reported apart).
    """
    text = text.rstrip()
    for p in range(1, max_period + 1):
        n = max(repeats, -(-min_span // p))
        if n * p > len(text):
            break
        unit = text[-p:]
        if unit.strip() and text.endswith(unit * n):
            return True
    return False


def cut_off_unanswered(response: str, finish_reason: str) -> bool:
    """True when the token budget stopped a response before it stated a final answer.

    Its last number is then an intermediate step, not an answer: grading it would let
    the budget, not the model, decide the score. Such a response counts as wrong.
    """
    return finish_reason == "length" and extract_final_answer(response)[1] not in _STATED


# Words that are mathematics or magnitude, not a unit, after a number ("5 pi" is not 5,
# nor is "2 million").
_MATH_WORDS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan", "exp", "inf", "infty", "infinity", "root", "squared",
               "cubed", "plus", "minus", "over", "mod", "factorial", "choose", "halves", "thirds", "fourths",
               "quarters", "dozen", "dozens", "hundred", "hundreds", "thousand", "thousands", "million", "millions",
               "billion", "billions", "trillion"}
# A number, then (after a space) only plain words: "12 dollars", "1,000 square feet".
_UNIT_TAIL_RE = re.compile(
    r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+)\s*(%?)\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)\.?"
)


def _ascii_digits(s: str) -> str:
    """Unicode decimal digits (fullwidth, Arabic-Indic, ...) as ASCII; U+2212 minus as '-'."""
    if s.isascii():
        return s
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in s).replace("\u2212", "-")


def _strip_outer_braces(a: str) -> str:
    """"{{7}}" -> "7": bare LaTeX braces only group. (math-verify reads them as nested
    sets, and its parse time grows exponentially with the depth.)"""
    while len(a) >= 2 and a[0] == "{" and a[-1] == "}":
        depth = 0
        for i, c in enumerate(a):
            depth += (c == "{") - (c == "}")
            if depth == 0 and i < len(a) - 1:
                return a  # the first brace closes before the end: "{a}+{b}"
        a = a[1:-1].strip()
    return a


def _normalise_plain(ans: str) -> str:
    a = _ascii_digits(ans).strip()
    a = re.sub(r"^\*\*(.*)\*\*$", r"\1", a).strip()  # markdown bold
    a = a.strip("$").strip()
    if a.startswith("\\$"):  # LaTeX-escaped dollar sign
        a = a[2:].strip()
    a = re.sub(r"^\\text\{(.*)\}$", r"\1", a).strip()
    a = _strip_outer_braces(a)
    m = _UNIT_TAIL_RE.fullmatch(a)
    if m and not {w.lower() for w in m.group(3).split()} & _MATH_WORDS:
        # "12 dollars", "12 cm", "50 percent": the number (math-verify reads "dollars" as a product)
        pct = "%" if m.group(2) or m.group(3).lower() == "percent" else ""
        a = m.group(1) + pct
    return a.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", a) else a


def normalise_answer(ans: str) -> str:
    """The plain-text normalisation the checker applies before math-verify (units, $, commas)."""
    return _normalise_plain(ans)


def canonical_answer(ans: str) -> str:
    """The checker's normalisation, then one spelling per number: 7, 7.0 and "7 dollars" are one answer."""
    a = normalise_answer(ans)
    try:
        x = Fraction(a)
    except (ValueError, ZeroDivisionError):
        return a
    return str(x.numerator) if x.denominator == 1 else str(x)


# ---------------------------------------------------------------- math-verify worker


def _verify_worker(conn) -> None:  # runs in the child process
    from math_verify import LatexExtractionConfig, ExprExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def p(s: str):
        # Wrap bare answers in $...$ so LaTeX extraction sees them as math.
        text = s if "$" in s or "\\(" in s else f"${s}$"
        return parse(text, extraction_config=configs, parsing_timeout=None)

    while True:
        try:
            gold, pred = conn.recv()
        except EOFError:
            return
        try:
            g, q = p(gold), p(pred)
            if not g:
                conn.send(("unparseable", "reference answer could not be parsed"))
            elif not q:
                conn.send(("unparseable", "response answer could not be parsed"))
            else:
                ok = verify(g, q, timeout_seconds=None)  # gold first: verify is asymmetric
                conn.send(("correct" if ok else "incorrect", "math-verify"))
        except Exception as e:  # parser bugs on odd input must not kill the worker
            conn.send(("unparseable", f"math-verify error: {type(e).__name__}"))


class AnswerChecker:
    """Thread-safe checker with a per-item deadline enforced by killing the worker."""

    # A fresh worker first imports math-verify and sympy (about a second, more on a
    # loaded machine); that start-up time does not count against the item's deadline.
    START_GRACE_S = 10.0

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self._warm = False

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_verify_worker, args=(child,), daemon=True)
        self._proc.start()
        child.close()  # only the worker holds its end, so its death reads as EOF here
        self._conn = parent
        self._warm = False

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self._warm = False  # the next worker pays for its imports again

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _equivalent(self, gold: str, pred: str) -> tuple[CheckVerdict, str]:
        gold, pred = _normalise_plain(gold), _normalise_plain(pred)
        if not gold or not pred:
            return "unparseable", f"{'reference' if not gold else 'response'} answer is empty after normalisation"
        if gold == pred:
            return "correct", "exact match"
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._kill()
                self._start()
            try:
                self._conn.send((gold, pred))
                if self._conn.poll(self.timeout_s + (0 if self._warm else self.START_GRACE_S)):
                    result = self._conn.recv()
                    self._warm = True
                    return result
            except (EOFError, OSError) as e:  # the worker died (crash, OOM kill): start afresh next time
                self._kill()
                return "unparseable", f"checker worker died ({type(e).__name__})"
            self._kill()
            return "unparseable", f"checker deadline of {self.timeout_s}s exceeded"

    def check(self, response: str, gold_answer: str) -> AnswerCheck:
        if gold_answer is None or not str(gold_answer).strip():
            return AnswerCheck("unparseable", "no reference answer to check against")
        pred, how = extract_final_answer(response)
        if not pred:
            return AnswerCheck("unparseable", how)
        gold = str(gold_answer).strip()
        if _looks_like_solution(gold):
            gold, why = extract_final_answer(gold)
            if not gold:
                return AnswerCheck("unparseable", f"reference: {why}", pred)
        if len(gold) > MAX_ANSWER_CHARS:
            return AnswerCheck("unparseable", f"reference answer is longer than {MAX_ANSWER_CHARS} characters", pred)
        verdict, why = self._equivalent(gold, pred)
        return AnswerCheck(verdict, f"{how}; {why}", pred)

    def __del__(self):
        try:
            self._kill()
        except Exception:
            pass


def _looks_like_solution(gold: str) -> bool:
    """A worked solution rather than a bare final answer: take its final answer first.

    Length alone does not tell: "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}" is a long answer.
    """
    return bool(re.search(r"\\boxed|\\fbox|####|\n", gold)) or bool(_ANSWER_IS_RE.search(gold))
