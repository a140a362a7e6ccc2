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
from dataclasses import dataclass
from typing import Literal

CheckVerdict = Literal["correct", "incorrect", "unparseable"]

# Only the tail of a response can hold its final answer; bounding what we scan keeps
# megabyte-sized outputs cheap and keeps pathological input away from the parser.
MAX_SCAN_CHARS = 4000
MAX_ANSWER_CHARS = 200

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(
    r"answer\s*(?:is|:|=)\s*:?\s*\$?\\?\(?\s*([^\n$]+?)\s*\$?\\?\)?\s*(?:\.\s|\.?$|\n)",
    re.IGNORECASE,
)
_LAST_NUMBER_RE = re.compile(_NUMBER)


@dataclass(frozen=True)
class AnswerCheck:
    verdict: CheckVerdict
    reason: str
    extracted: str = ""


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), brace-balanced."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            depth += (c == "{") - (c == "}")
            i += 1
        if depth == 0:
            best = text[m.end() : i - 1]
    return best


def extract_final_answer(text: str) -> tuple[str, str]:
    """Return (answer, how) where how names the rule that matched, or ("", reason)."""
    if not isinstance(text, str) or not text.strip():
        return "", "empty response"
    tail = text[-MAX_SCAN_CHARS:]
    boxed = _last_boxed(tail)
    if boxed is not None and boxed.strip():
        return boxed.strip()[:MAX_ANSWER_CHARS], "boxed"
    hashes = _HASH_RE.findall(tail)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip()[:MAX_ANSWER_CHARS], "####"
    said = _ANSWER_IS_RE.findall(tail)
    if said:
        ans = said[-1].strip().rstrip(".").strip()
        if ans:
            return ans[:MAX_ANSWER_CHARS], "answer-is"
    nums = _LAST_NUMBER_RE.findall(tail)
    if nums:
        return nums[-1], "last-number"
    return "", "no answer found in the last %d characters" % MAX_SCAN_CHARS


def _normalise_plain(ans: str) -> str:
    a = ans.strip().strip("$").strip()
    a = re.sub(r"^\\text\{(.*)\}$", r"\1", a)
    return a.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", a) else a


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

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_verify_worker, args=(child,), daemon=True)
        self._proc.start()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _equivalent(self, gold: str, pred: str) -> tuple[CheckVerdict, str]:
        if _normalise_plain(gold) == _normalise_plain(pred):
            return "correct", "exact match"
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            self._conn.send((gold, pred))
            # The first call also pays for the worker's imports (about a second).
            if self._conn.poll(self.timeout_s + (10 if not getattr(self, "_warm", False) else 0)):
                self._warm = True
                return self._conn.recv()
            self._kill()
            return "unparseable", f"checker deadline of {self.timeout_s}s exceeded"

    def check(self, response: str, gold_answer: str) -> AnswerCheck:
        if not gold_answer or not str(gold_answer).strip():
            return AnswerCheck("unparseable", "no reference answer to check against")
        pred, how = extract_final_answer(response)
        if not pred:
            return AnswerCheck("unparseable", how)
        gold, _ = extract_final_answer(str(gold_answer)) if len(str(gold_answer)) > 40 else (str(gold_answer), "")
        verdict, why = self._equivalent(gold.strip()[:MAX_ANSWER_CHARS], pred)
        return AnswerCheck(verdict, f"{how}; {why}", pred)

    def __del__(self):
        try:
            self._kill()
        except Exception:
            pass
