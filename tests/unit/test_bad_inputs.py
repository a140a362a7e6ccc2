"""Bad inputs, one case each: every case must end in a clear error that names the place
(file:line, the dotted config key, the resource pool, the path) and what was expected,
or in a counted skip / an ungraded result that carries its reason. Never a hang, an
unhandled exception or a silent drop.

Each case is a `test_bad_*` function (or parametrised instance). An autouse fixture
registers it as tried; the helper that checks its outcome records the outcome as the
case's last step. When the module's tests are done, whatever order they ran in, a
module-scoped fixture writes docs/results/bad_inputs.json from what this run recorded
and fails (an error at teardown) unless every tried case ended in one of the three clear
outcomes.

Valid-but-extreme inputs that must simply work (a 5 MB question, a huge response whose
answer is in the tail) are tested too, under names without the `test_bad_` prefix:
they are not bad inputs and are not counted in the summary.

No Ray, vLLM, DeepSpeed or model is started here; files are written to tmp_path. The
answer checker starts its math-verify worker process (one, module-scoped).
"""

from __future__ import annotations

import json
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.answers import MAX_ANSWER_CHARS, MAX_SCAN_CHARS, AnswerChecker, extract_final_answer
from core.config import ConfigError, DatasetSpec, load_config
from core.data import DataError, load_problems
from core.grading import parse_judge_output
from core.models import ModelError, check_checkpoint_dir, resolve_model
from pipelines.preflight import check_data_sources, check_local_resources
from pipelines.stages import load_critique_records  # imports ray; nothing here starts it

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "docs" / "results" / "bad_inputs.json"
MB = 1_000_000
# A hang becomes a prompt failure after this long. It is a hang detector, not a speed limit:
# no case asserts how long it took (a loaded 2-core machine makes any such figure flaky);
# deadlines are checked by their outcome, the checker's "deadline exceeded" verdict.
HANG_S = 120.0

OUTCOMES = ("clear_error", "counted_skip", "ungraded_with_reason")
CASES: dict[str, str | None] = {}  # case id -> outcome; None while (or if) a case has not recorded one
_current: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _write_summary_after_all_cases(request):
    """docs/results/bad_inputs.json from the cases that ran, after the last of them; a partial
    run (-k, one case) checks its cases but leaves the committed file alone."""
    yield
    opt = request.config.option
    partial = opt.keyword or opt.markexpr or any("::" in a for a in request.config.args)
    if not CASES or partial:
        return
    cases = [{"id": k, "outcome": v or "not_clear"} for k, v in CASES.items()]
    n, m = len(cases), sum(c["outcome"] in OUTCOMES for c in cases)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps({"bad_inputs_tried": n, "bad_inputs_clear": m, "cases": cases}, indent=2) + "\n")
    assert m == n, [c for c in cases if c["outcome"] not in OUTCOMES]


@pytest.fixture(autouse=True)
def _register_case(request):
    name = request.node.name
    if request.node.originalname.startswith("test_bad_"):
        CASES[name] = None
        _current[:] = [name]
    else:
        _current[:] = []
    yield
    _current[:] = []


def _record(outcome: str) -> None:
    assert outcome in OUTCOMES
    assert _current, "only test_bad_* cases record outcomes"
    CASES[_current[0]] = outcome


@contextmanager
def no_hang(seconds: float, what: str):
    """Turn a hang into a prompt failure (SIGALRM; regex and Python code are interruptible).

    pytest-timeout's own alarm, if set, is put back with its remaining time afterwards.
    """
    def _raise(signum, frame):
        raise TimeoutError(f"{what}: still running after {seconds}s (a hang)")

    t0 = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, _raise)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - t0), 0.001), old_interval)


# ------------------------------------------------------------------ outcome helpers (each is a case's last step)


def clear_error(exc: type[Exception], fn, *parts: str, absent: tuple[str, ...] = ()) -> str:
    """fn() raises exc (without hanging); its message holds every one of parts and none of absent."""
    with pytest.raises(exc) as ei, no_hang(HANG_S, "bad-input case"):
        fn()
    msg = str(ei.value)
    for part in parts:
        assert part in msg, f"{part!r} not in the error message:\n{msg}"
    for part in absent:
        assert part not in msg, f"{part!r} should not be in the error message:\n{msg}"
    _record("clear_error")
    return msg


def counted_skip(report, path: Path, lineno: int, *parts: str) -> None:
    """The report counts exactly one skipped row for path:lineno, with the given reason parts."""
    hits = [s for s in report.skipped if s.startswith(f"{path}:{lineno}:")]
    assert len(hits) == 1, (lineno, report.skipped)
    for part in parts:
        assert part in hits[0], f"{part!r} not in the skip reason: {hits[0]}"
    assert f"skipped {len(report.skipped)} bad rows" in report.summary()
    _record("counted_skip")


def ungraded_grade(g, *parts: str) -> None:
    assert g.score is None and g.verdict == "unknown", g
    assert g.reason.strip(), g
    for part in parts:
        assert part in g.reason, f"{part!r} not in the reason: {g.reason}"
    _record("ungraded_with_reason")


def ungraded_check(res, *parts: str) -> None:
    assert res.verdict == "unparseable", res
    assert res.reason.strip(), res
    for part in parts:
        assert part in res.reason, f"{part!r} not in the reason: {res.reason}"
    _record("ungraded_with_reason")


def ungraded_extract(got: tuple[str, str], *parts: str) -> None:
    answer, reason = got
    assert answer == "" and reason.strip(), got
    for part in parts:
        assert part in reason, f"{part!r} not in the reason: {reason}"
    _record("ungraded_with_reason")


# ------------------------------------------------------------------ file helpers


def write_lines(path: Path, lines: list) -> Path:
    """lines: dicts/lists/numbers (dumped as JSON) or str (written verbatim)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def load(kind: str, path: Path, mode: str = "error", **kw):
    return load_problems(DatasetSpec(kind=kind, path=str(path), **kw), on_bad_row=mode)


GSM = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"}
MATH = {"problem": "What is $1+1$?", "solution": "$1+1=\\boxed{2}$", "level": "Level 1", "type": "Algebra"}
MUE = {"question_id": 1, "source": "s", "question": "Prove it.", "reference": "Because.", "category": "proof"}
GOOD = {"gsm8k": GSM, "math": MATH, "mathusereval": MUE, "jsonl": {"question": "What is 2+2?", "answer": 4}}


# ================================================================== JSONL structure


def test_bad_json_mid_file_error(tmp_path):
    p = write_lines(tmp_path / "mid.jsonl", [GSM, '{"question": "q", "answer": "#### 1"', GSM | {"question": "b"}])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "malformed JSON")


def test_bad_json_mid_file_skip(tmp_path):
    p = write_lines(tmp_path / "mid.jsonl", [GSM, '{"question": "q", "answer": ', GSM | {"question": "b"}])
    probs, report = load("gsm8k", p, mode="skip")
    assert [x.question for x in probs] == [GSM["question"], "b"] and report.loaded == 2
    counted_skip(report, p, 2, "malformed JSON")


def test_bad_truncated_last_line_error(tmp_path):
    p = tmp_path / "trunc.jsonl"
    p.write_text(json.dumps(GSM) + "\n" + json.dumps(GSM | {"question": "b"}) + "\n" + json.dumps(GSM)[:25])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:3:", "malformed JSON", "truncated")


def test_bad_truncated_last_line_skip(tmp_path):
    p = tmp_path / "trunc.jsonl"
    p.write_text(json.dumps(GSM) + "\n" + json.dumps(GSM)[:-3])
    probs, report = load("gsm8k", p, mode="skip")
    assert len(probs) == 1
    counted_skip(report, p, 2, "truncated")


def test_bad_json_array_instead_of_object(tmp_path):
    p = write_lines(tmp_path / "arr.jsonl", [GSM, [GSM["question"], GSM["answer"]]])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "expected a JSON object, got list")


def test_bad_json_number_line(tmp_path):
    p = write_lines(tmp_path / "num.jsonl", [GSM, 42])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "expected a JSON object, got int")


def test_bad_pretty_printed_json_array_file(tmp_path):
    # a .json file holding one indented array, not one object per line
    p = tmp_path / "all.json"
    p.write_text(json.dumps([GSM, GSM], indent=2))
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:1:", "malformed JSON")


def test_bad_two_objects_on_one_line(tmp_path):
    p = write_lines(tmp_path / "two.jsonl", [json.dumps(GSM) + " " + json.dumps(GSM)])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:1:", "malformed JSON", "Extra data")


def test_bad_non_utf8_bytes_error(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(json.dumps(GSM).encode() + b"\n" + '{"question": "caf\xe9?", "answer": "#### 1"}'.encode("latin-1"))
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "not valid UTF-8", "byte")


def test_bad_non_utf8_bytes_skip(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"question": "\xbfcu\xe1nto?", "answer": "#### 1"}\n'.encode("latin-1") + json.dumps(GSM).encode())
    probs, report = load("gsm8k", p, mode="skip")
    assert len(probs) == 1
    counted_skip(report, p, 1, "not valid UTF-8")


def test_bad_utf16_file(tmp_path):
    p = tmp_path / "utf16.jsonl"
    p.write_bytes(json.dumps(GSM).encode("utf-16"))  # starts with the FF FE byte-order mark
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:1:", "not valid UTF-8")


def test_bad_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(b"")
    clear_error(DataError, lambda: load("gsm8k", p), str(p), "no usable problems")


def test_bad_only_blank_lines(tmp_path):
    p = tmp_path / "blank.jsonl"
    p.write_text("\n   \n\t\n\r\n\n")
    clear_error(DataError, lambda: load("math", p), str(p), "no usable problems")


def test_bad_utf8_bom_at_start(tmp_path):
    # Decision: a BOM is a clear error on line 1 (the message says BOM), not silently accepted.
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GSM).encode() + b"\n")
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:1:", "malformed JSON", "BOM")


def test_bad_deeply_nested_json_line(tmp_path):
    # json recurses once per level: this used to escape as a RecursionError
    p = write_lines(tmp_path / "deep.jsonl", [GSM, "[" * 100_000 + "]" * 100_000])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "nested too deeply")


def test_bad_deeply_nested_json_line_skip(tmp_path):
    p = write_lines(tmp_path / "deep.jsonl", ['{"a":' * 50_000 + "1" + "}" * 50_000, GSM])
    probs, report = load("gsm8k", p, mode="skip")
    assert len(probs) == 1
    counted_skip(report, p, 1, "nested too deeply")


def test_bad_nul_bytes_line(tmp_path):
    p = tmp_path / "nul.jsonl"
    p.write_bytes(json.dumps(GSM).encode() + b"\n\x00\x00\x00\n")
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "malformed JSON")


def test_bad_every_row_bad_in_skip_mode(tmp_path):
    p = write_lines(tmp_path / "allbad.jsonl", ['{"x', {"question": "q"}, [1]])
    clear_error(DataError, lambda: load("gsm8k", p, mode="skip"), str(p), "no usable problems",
                f"{p}:1: malformed JSON")


def test_bad_missing_file():
    missing = "data/no-such-file.jsonl"
    clear_error(DataError, lambda: load_problems(DatasetSpec(kind="gsm8k", path=missing)), repr(missing),
                "neither an existing file")


def test_bad_no_path_for_file_loader():
    clear_error(DataError, lambda: load_problems(DatasetSpec(kind="math")), "kind='math'", "needs a path")


# ================================================================== wrong types and missing fields, per loader


FIELD_CASES = [
    # kind, row overrides (None value = delete the key), field named in the error, expected message part
    ("gsm8k", {"question": 42}, "'question'", "has type int, expected a non-empty string"),
    ("gsm8k", {"question": ["a", "list"]}, "'question'", "has type list"),
    ("gsm8k", {"question": None}, "'question'", "missing field"),
    ("gsm8k", {"question": True}, "'question'", "has type bool"),
    ("gsm8k", {"answer": 18}, "'answer'", "has type int, expected a solution ending in '#### <answer>'"),
    ("gsm8k", {"answer": "It is 5."}, "'answer'", "no '#### <answer>' line"),
    ("gsm8k", {"answer": "work\n####  "}, "'answer'", "empty '####' answer"),
    ("math", {"problem": None}, "'problem'", "missing field"),
    ("math", {"solution": 2}, "'solution'", "has type int, expected a solution containing \\boxed{...}"),
    ("math", {"solution": "so it is 2"}, "'solution'", "no \\boxed{...} answer"),
    ("math", {"level": ["Level 1"]}, "'level'", "has type list"),
    ("math", {"problem": {"text": "1+1"}}, "'problem'", "has type dict"),
    ("mathusereval", {"reference": None}, "'reference'", "missing field"),
    ("mathusereval", {"category": None}, "'category'", "missing field"),
    ("mathusereval", {"reference": 3.5}, "'reference'", "has type float"),
    ("mathusereval", {"question": False}, "'question'", "has type bool"),
    ("mathusereval", {"question_id": {"n": 1}}, "'question_id'", "has type dict"),
    ("jsonl", {"question": None}, "'question'", "missing field"),
    ("jsonl", {"question": 7}, "'question'", "has type int"),
    ("jsonl", {"answer": [4]}, "'answer'", "has type list"),
    ("jsonl", {"answer": float("nan")}, "'answer'", "is nan"),
    ("jsonl", {"answer": float("inf")}, "'answer'", "is inf"),
    ("jsonl", {"category": True}, "'category'", "has type bool"),
]


def _field_case_id(kind: str, field: str, part: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", f"{kind}-{field}-{part.split(',')[0]}".lower()).strip("_")


@pytest.mark.parametrize("kind,change,field,part", FIELD_CASES, ids=[_field_case_id(k, f, p) for k, _, f, p in FIELD_CASES])
def test_bad_field(tmp_path, kind, change, field, part):
    row = dict(GOOD[kind]) | change  # a None value is written as an explicit JSON null
    p = tmp_path / f"{kind}.jsonl"
    # json.dumps writes NaN/Infinity for non-finite floats, as some exporters do
    p.write_text(json.dumps(GOOD[kind]) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    if kind == "mathusereval":  # keep the two rows' ids distinct
        p.write_text(json.dumps(GOOD[kind] | {"question_id": 2}) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    where = f"missing field {field}" if part == "missing field" else f"field {field}"
    says_expected = "'####'" not in part and "\\boxed{...} answer" not in part
    clear_error(DataError, lambda: load(kind, p), f"{p}:2:", where, part, "expected" if says_expected else "")


def test_bad_field_missing_key_each_kind(tmp_path):
    """A missing key (not null) for each loader's required field, in one file per kind."""
    for kind, key in (("gsm8k", "answer"), ("math", "solution"), ("mathusereval", "question"), ("jsonl", "question")):
        row = {k: v for k, v in GOOD[kind].items() if k != key}
        p = write_lines(tmp_path / f"{kind}-missing.jsonl", [row])
        with pytest.raises(DataError) as ei:
            load(kind, p)
        assert f"{p}:1: missing field {key!r}, expected" in str(ei.value), str(ei.value)
    _record("clear_error")


COLS = {"id": "uid", "question": "prompt", "answer": "target"}


def test_bad_columns_mapped_column_missing(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [{"uid": "a", "prompt": "2+2?", "target": 4}, {"uid": "b", "question": "x"}])
    clear_error(DataError, lambda: load("jsonl", p, columns=COLS), f"{p}:2:", "missing field 'prompt'",
                "expected a non-empty string")


def test_bad_columns_mapped_column_wrong_type(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [{"uid": "a", "prompt": {"text": "2+2?"}, "target": 4}])
    clear_error(DataError, lambda: load("jsonl", p, columns=COLS), f"{p}:1:", "field 'prompt' has type dict")


def test_bad_columns_unknown_target_field(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [{"prompt": "q"}])
    clear_error(DataError, lambda: load("jsonl", p, mode="skip", columns={"questoin": "prompt"}), "data.columns",
                "['questoin']", "expected some of id, question")


def test_bad_columns_duplicate_ids_skip(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [{"uid": 7, "prompt": "a"}, {"uid": 7, "prompt": "b"}, {"uid": 8, "prompt": "c"}])
    probs, report = load("jsonl", p, mode="skip", columns=COLS)
    assert [x.id for x in probs] == ["7", "8"]
    counted_skip(report, p, 2, "duplicate problem id '7'")


def test_bad_mixed_rows_skip_counts_each(tmp_path):
    rows = [MATH, {"problem": 5, "solution": "\\boxed{5}"}, {"problem": "p"}, '{"problem": "p", "solu',
            MATH | {"problem": "ok too"}, {"problem": "  ", "solution": "\\boxed{1}"}]
    p = write_lines(tmp_path / "mixed.jsonl", rows)
    probs, report = load("math", p, mode="skip")
    assert [x.question for x in probs] == [MATH["problem"], "ok too"]
    assert len(report.skipped) == 4 and report.loaded == 2
    for lineno, reason in ((2, "type int"), (3, "missing field 'solution'"), (4, "malformed JSON")):
        assert any(s.startswith(f"{p}:{lineno}:") and reason in s for s in report.skipped), (lineno, report.skipped)
    counted_skip(report, p, 6, "field 'problem' is empty")


# ================================================================== empty and huge questions


@pytest.mark.parametrize("question", ["", " ", "\t\n  \r\n", "\u3000\u2003"], ids=["empty", "space", "ws-mix",
                                                                                  "unicode-spaces"])
def test_bad_blank_question(tmp_path, question):
    p = write_lines(tmp_path / "blank.jsonl", [GSM | {"question": question}])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:1:", "field 'question' is empty",
                "expected a non-empty string")


def test_bad_huge_question_truncated(tmp_path):
    p = tmp_path / "huge.jsonl"
    p.write_text(json.dumps(GSM) + "\n" + json.dumps({"question": "x" * (5 * MB), "answer": "#### 1"})[: 3 * MB])
    clear_error(DataError, lambda: load("gsm8k", p), f"{p}:2:", "malformed JSON")


def test_bad_huge_question_with_bad_type_in_skip_mode(tmp_path):
    p = write_lines(tmp_path / "huge.jsonl", [{"question": ["x" * (5 * MB)], "answer": "#### 1"}, GSM])
    with no_hang(HANG_S, "load"):
        probs, report = load("gsm8k", p, mode="skip")
    assert len(probs) == 1
    assert len(report.skipped[0]) < 1000  # the reason names the row, it does not quote 5 MB
    counted_skip(report, p, 1, "field 'question' has type list")


def test_huge_question_loads_intact(tmp_path):
    """Not a bad input: a 5 MB question is loaded intact."""
    q = "How many? " * (5 * MB // 10)
    p = write_lines(tmp_path / "huge.jsonl", [{"question": q, "answer": "#### 3"}])
    with no_hang(HANG_S, "load"):
        probs, report = load("gsm8k", p)
    assert report.loaded == 1 and probs[0].question == q and probs[0].answer == "3"


# ================================================================== huge and pathological responses


@pytest.fixture(scope="module")
def checker():
    c = AnswerChecker(timeout_s=5)
    yield c
    c.close()


def check_no_hang(c: AnswerChecker, response, gold):
    """The check returns (its own deadline turns a slow parse into a verdict that says so)."""
    with no_hang(HANG_S, "AnswerChecker.check"):
        res = c.check(response, gold)
    return res


def extract_no_hang(text):
    with no_hang(HANG_S, "extract_final_answer"):
        got = extract_final_answer(text)
    return got


PROSE = "Let us think about it carefully. " * (5 * MB // 33)  # 5 MB without a digit


def test_bad_response_5mb_without_answer(checker):
    ungraded_check(check_no_hang(checker, PROSE, "42"), f"no answer found in the last {MAX_SCAN_CHARS} characters")


def test_bad_response_5mb_answer_only_at_start(checker):
    # only the tail can hold the final answer; an early \boxed{42} followed by 5 MB is no answer
    ungraded_check(check_no_hang(checker, "\\boxed{42} " + PROSE, "42"), "no answer found")


def test_bad_response_5mb_unclosed_boxed(checker):
    ungraded_check(check_no_hang(checker, "\\boxed{" * (5 * MB // 7), "1"), "no answer found")


def test_bad_response_5mb_of_digits(checker):
    ungraded_check(check_no_hang(checker, "7" * (5 * MB), "7"), f"longer than {MAX_ANSWER_CHARS} characters")


def test_bad_response_5mb_of_braces(checker):
    ungraded_check(check_no_hang(checker, "{" * (5 * MB), "1"), "no answer found")


def test_bad_extract_5mb_answer_is_repeated():
    ungraded_extract(extract_no_hang("the answer is " * (5 * MB // 14)), "(answer-is) is longer than")


def test_bad_extract_answer_is_whitespace_bomb():
    # "answer:" + spaces + x + spaces + "$y" backtracked for minutes before the fix
    text = "The answer is:" + " " * 1500 + "x" + " " * 1500 + "$y"
    ungraded_extract(extract_no_hang(text), "no answer found")


def test_bad_response_answer_is_whitespace_bomb(checker):
    text = "Answer:" + " \t" * 900 + "z" + " " * 1800 + "$$w"
    ungraded_check(check_no_hang(checker, text, "3"), "no answer found")


def test_bad_latex_deep_brace_nesting(checker):
    text = "\\boxed{" + "{" * 1500 + "1" + "}" * 1500 + "}"
    ungraded_check(check_no_hang(checker, text, "1"), "(boxed) is longer than")


def test_bad_latex_10k_nested_fracs(checker):
    text = "\\boxed{" + "\\frac{1}{" * 10_000 + "2" + "}" * 10_000 + "}"
    ungraded_check(check_no_hang(checker, text, "1/2"), "no answer found")


def test_bad_latex_unbalanced_braces_no_number(checker):
    ungraded_check(check_no_hang(checker, "so \\boxed{\\frac{a}{b" + " and {{{" * 500, "1"), "no answer found")


def test_bad_extract_unbalanced_boxed_10k():
    ungraded_extract(extract_no_hang("\\boxed{\\frac{" * 10_000), "no answer found")


def test_bad_gold_is_unbalanced_solution(checker):
    ungraded_check(check_no_hang(checker, "\\boxed{1}", "the answer is \\boxed{" + "{" * 300), "reference:")


def test_garbage_latex_answer_gets_a_verdict(checker):
    """Not counted (math-verify reads "}}}{{{" as something and calls it wrong): a verdict with
    its reason. Also starts the worker for the cases below."""
    res = check_no_hang(checker, "The answer is }}}{{{.", "3")
    assert res.verdict in ("incorrect", "unparseable") and res.reason.startswith("answer-is; "), res


def test_bad_latex_huge_exponent_tower(checker):
    # 9^(9^(9^9)) cannot be evaluated: our deadline stops the worker, the verdict says so
    check_no_hang(checker, "The answer is \\frac{1}{2}", "0.5")  # warm worker: the deadline is the 5 s alone
    res = check_no_hang(checker, "\\boxed{9^{9^{9^9}}}", "1")  # the outcome shows the deadline stopped it
    ungraded_check(res, "boxed", "deadline of 5")


def test_response_10k_sequential_fracs_gets_a_verdict(checker):
    """Not counted: 10k \\frac{1}{2} in a \\boxed{} that starts outside the scan window get a verdict
    (the tail's last number) with its reason. The checker works again after the deadline case."""
    text = "\\boxed{" + "\\frac{1}{2}+" * 9_999 + "\\frac{1}{2}}"
    res = check_no_hang(checker, text, "5000")
    assert res.verdict in ("incorrect", "unparseable") and res.reason, res
    assert check_no_hang(checker, "The answer is 0.5", "\\frac{1}{2}").verdict == "correct"


def test_response_5mb_with_answer_in_tail_is_graded(checker):
    """Not counted: a valid long response is graded."""
    res = check_no_hang(checker, PROSE + "\nThe answer is 42.", "42")
    assert res.verdict == "correct" and res.reason == "answer-is; exact match", res


# ================================================================== judge output


JUDGE_CASES = [
    pytest.param("The response is right, well argued.", "no 'Score: N' line", id="no-score"),
    pytest.param("Score: 0", "outside 1..10", id="score-0"),
    pytest.param("Score: 11", "outside 1..10", id="score-11"),
    pytest.param("Score: -3", "outside 1..10", id="score-neg3"),
    pytest.param("Score: 1e9", "no 'Score: N' line", id="score-1e9-exponent"),
    pytest.param("Score: 1000000000", "outside 1..10", id="score-1e9-digits"),
    pytest.param("Score: 10.5", "outside 1..10", id="score-10.5"),
    pytest.param("Score: high", "no 'Score: N' line", id="score-word"),
    pytest.param("Score: NaN", "no 'Score: N' line", id="score-nan"),
    pytest.param("Score: 8/7", "not on the 1..10 scale", id="score-other-scale"),
    pytest.param("", "empty", id="empty"),
    pytest.param(" \n\t ", "empty", id="whitespace"),
    pytest.param(None, "empty", id="none"),
    pytest.param("#$%&*@!" * (3 * MB // 7), "no 'Score: N' line", id="3MB-junk"),
    pytest.param("Score: 8\n" + "\x00\xff junk " * (MB // 10), "no 'Score: N' line", id="score-then-1MB-junk"),
    pytest.param("score" + " " * 1000 + ":" + " " * 990 + "x", "no 'Score: N' line", id="whitespace-bomb"),
    pytest.param("**Score**" + "*" * 1990 + "x", "no 'Score: N' line", id="star-bomb"),
    pytest.param("Score: " + "9" * 1500, "outside 1..10", id="1500-digit-score"),
]


@pytest.mark.parametrize("text,reason", JUDGE_CASES)
def test_bad_judge_output(text, reason):
    with no_hang(HANG_S, "parse_judge_output"):
        g = parse_judge_output(text)
    assert len(g.analysis) <= 500
    ungraded_grade(g, reason)


# ================================================================== critique records (critic stage)


REC = {"question": "What is 2+2?", "reference": "4", "response": "2+2=4. The answer is 4.",
       "critique": "The final answer 4 matches the reference.", "score": 9}


def records_file(tmp_path: Path, *lines) -> Path:
    return write_lines(tmp_path / "records.jsonl", [REC, *lines])


def test_bad_records_malformed_json(tmp_path):
    p = records_file(tmp_path, '{"question": "q", "score": 3', REC)
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "malformed JSON")


def test_bad_records_truncated_last_line(tmp_path):
    p = records_file(tmp_path)
    p.write_text(p.read_text() + json.dumps(REC)[:-10])
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "truncated")


@pytest.mark.parametrize("field", ["question", "reference", "response", "critique", "score"])
def test_bad_records_missing_field(tmp_path, field):
    p = records_file(tmp_path, {k: v for k, v in REC.items() if k != field})
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", f"missing field {field!r}", "expected")


@pytest.mark.parametrize("score", [0, 11, -3, 1e9, 10.5, 0.99], ids=lambda s: f"score={s}")
def test_bad_records_score_out_of_range(tmp_path, score):
    p = records_file(tmp_path, REC | {"score": score})
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "field 'score'", "from 1 to 10",
                f"got {score!r}")


@pytest.mark.parametrize("score", ["8", True, False, [8], {"v": 8}, float("nan")],
                         ids=["string", "true", "false", "list", "dict", "nan"])
def test_bad_records_score_wrong_type(tmp_path, score):
    p = records_file(tmp_path, REC | {"score": score})
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "field 'score' must be a number")


def test_bad_records_score_null(tmp_path):
    p = records_file(tmp_path, REC | {"score": None})
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "missing field 'score' (null)",
                "expected a number from 1 to 10")


@pytest.mark.parametrize("field,value,part", [
    ("question", None, "missing field 'question' (null)"),
    ("response", ["a", "b"], "field 'response' has type list, expected a string"),
    ("reference", 4, "field 'reference' has type int, expected a string"),
    ("critique", "   ", "field 'critique' is empty"),
], ids=["question-null", "response-list", "reference-int", "critique-blank"])
def test_bad_records_text_field(tmp_path, field, value, part):
    p = records_file(tmp_path, REC | {field: value})
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", part)


def test_bad_records_empty_file(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text("")
    clear_error(DataError, lambda: load_critique_records(str(p)), str(p), "no critique records")


def test_bad_records_blank_lines_only(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text("\n\n   \n")
    clear_error(DataError, lambda: load_critique_records(str(p)), str(p), "no critique records")


def test_bad_records_non_utf8(tmp_path):
    p = records_file(tmp_path)
    p.write_bytes(p.read_bytes() + json.dumps(REC).replace("What", "Qu\u00e9").encode("utf-8").replace(
        b"\xc3\xa9", b"\xe9") + b"\n")
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "not valid UTF-8")


@pytest.mark.parametrize("line,typename", [([REC], "list"), (7, "int"), ('"just text"', "str")],
                         ids=["array", "number", "string"])
def test_bad_records_not_an_object(tmp_path, line, typename):
    p = records_file(tmp_path, line)
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "expected a JSON object",
                f"got {typename}")


def test_bad_records_bom(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(REC).encode() + b"\n")
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:1:", "BOM")


def test_bad_records_deeply_nested(tmp_path):
    p = records_file(tmp_path, "[" * 100_000)
    clear_error(DataError, lambda: load_critique_records(str(p)), f"{p}:2:", "nested too deeply")


def test_bad_records_path_missing(tmp_path):
    p = tmp_path / "nope.jsonl"
    clear_error(DataError, lambda: load_critique_records(str(p)), "critic.records_path", str(p), "does not exist")


def test_records_line_separator_inside_a_string_is_one_record(tmp_path):
    """Not counted: U+2028 written raw inside a JSON string is one record (str.splitlines split it)."""
    p = tmp_path / "records.jsonl"
    p.write_text(json.dumps(REC | {"critique": "first part\u2028second part\u0085third"}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    recs = load_critique_records(str(p))
    assert len(recs) == 1 and "second part" in recs[0].response and recs[0].response.endswith("Score: 9")


# ================================================================== config


def yaml_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_bad_config_unknown_section(tmp_path):
    p = yaml_file(tmp_path, "rft:\n  lr: 1.0e-5\nsampler:\n  n: 4\n")
    clear_error(ConfigError, lambda: load_config(p), str(p), "sampler: unknown key")


def test_bad_config_unknown_nested_key():
    clear_error(ConfigError, lambda: load_config(None, ["rft.lrr=1e-5"]), "rft.lrr: unknown key")


def test_bad_config_unknown_deep_key(tmp_path):
    p = yaml_file(tmp_path, "resources:\n  samplers:\n    num_gpu: 1\n")
    clear_error(ConfigError, lambda: load_config(p), "resources.samplers.num_gpu: unknown key")


OUT_OF_RANGE = [
    ("sampling.n=0", "sampling.n", "greater than or equal to 1"),
    ("sampling.top_p=1.5", "sampling.top_p", "less than or equal to 1"),
    ("dpo.label_smoothing=0.5", "dpo.label_smoothing", "less than 0.5"),
    ("critic.heldout_fraction=0", "critic.heldout_fraction", "greater than 0"),
    ("resources.samplers.num_actors=-1", "resources.samplers.num_actors", "greater than or equal to 1"),
    ("model.max_model_len=10", "model.max_model_len", "greater than or equal to 64"),
]


@pytest.mark.parametrize("override,key,part", OUT_OF_RANGE, ids=[o for o, _, _ in OUT_OF_RANGE])
def test_bad_config_out_of_range(override, key, part):
    clear_error(ConfigError, lambda: load_config(None, [override]), f"{key}:", part,
                f"(got {override.split('=', 1)[1]}")


WRONG_TYPE = [
    ("train.micro_batch_size=four", "train.micro_batch_size", "valid integer"),
    ("rft.epochs=1.5", "rft.epochs", "fractional part"),
    ("sampling.temperature=hot", "sampling.temperature", "valid number"),
    ("model.name=[a, b]", "model.name", "valid string"),
    ("run.stages=[critic, train]", "run.stages.1", "'critic', 'rft', 'dpo' or 'eval'"),
    ("data.train.kind=csv", "data.train.kind", "'generated'"),
    ("rft=5", "rft", "valid dictionary"),
]


@pytest.mark.parametrize("override,key,part", WRONG_TYPE, ids=[o for o, _, _ in WRONG_TYPE])
def test_bad_config_wrong_type(override, key, part):
    clear_error(ConfigError, lambda: load_config(None, [override]), f"{key}:", part)


def test_bad_config_string_for_int_in_yaml(tmp_path):
    p = yaml_file(tmp_path, "train:\n  micro_batch_size: \"four\"\n  grad_accum: 2\n")
    clear_error(ConfigError, lambda: load_config(p), str(p), "train.micro_batch_size:", "valid integer", "'four'")


def test_bad_config_tensor_parallel_exceeds_gpus():
    clear_error(ConfigError, lambda: load_config(None, ["resources.samplers.tensor_parallel_size=2",
                                                        "resources.samplers.num_gpus=1"]),
                "resources.samplers", "tensor_parallel_size=2", "num_gpus >= 2", "got 1")


def test_bad_config_not_a_mapping(tmp_path):
    p = yaml_file(tmp_path, "- rft\n- dpo\n")
    clear_error(ConfigError, lambda: load_config(p), str(p), "expected a mapping of sections")


def test_bad_config_invalid_yaml(tmp_path):
    p = yaml_file(tmp_path, "rft:\n  lr: 1e-5\n  epochs: [1, 2\n")
    clear_error(ConfigError, lambda: load_config(p), str(p), "not valid YAML", "line")


def test_bad_config_file_missing(tmp_path):
    p = tmp_path / "absent.yaml"
    clear_error(ConfigError, lambda: load_config(p), "config file not found", str(p))


def test_bad_config_override_without_equals():
    clear_error(ConfigError, lambda: load_config(None, ["rft.lr"]), "'rft.lr'", "expected KEY=VALUE")


def test_bad_config_override_into_a_value():
    clear_error(ConfigError, lambda: load_config(None, ["rft.lr=1e-5", "rft.lr.x=1"]), "'rft.lr.x'",
                "'lr' is a value, not a section")


# ================================================================== impossible resources on a local Ray


def cfg_with(*overrides: str):
    return load_config(None, list(overrides))


def test_bad_resources_gpu_on_cpu_machine():
    cfg = cfg_with("resources.samplers.num_gpus=1")
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 2.0}), "resources.samplers[0]",
                "GPU=1", "this machine has 0")


def test_bad_resources_more_cpus_than_exist():
    cfg = cfg_with("resources.critics.num_cpus=4")
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 2.0}), "resources.critics[0]",
                "CPU=4", "this machine has 2")


@pytest.mark.parametrize("key", ["eval.mathusereval_path", "critic.records_path", "data.test.path"])
def test_bad_data_source_fails_before_any_stage(key):
    extra = ["data.test.kind=gsm8k"] if key == "data.test.path" else []
    cfg = cfg_with(f"{key}=no/such/file.jsonl", *extra)
    clear_error(DataError, lambda: check_data_sources(cfg), key, "'no/such/file.jsonl'", "neither an existing file")


def test_bad_resources_custom_resource_missing():
    cfg = cfg_with("resources.samplers.custom_resources={sampler_node: 1}", "resources.samplers.num_cpus=0.5",
                   "resources.critics.num_cpus=0.5", "resources.learner_cpus=0.5")
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 2.0}), "resources.samplers[0]",
                "sampler_node=1", "this machine has 0")


def test_bad_resources_learner_resource_missing():
    cfg = cfg_with("resources.learner_resources={trainer_node: 1}", "resources.samplers.num_cpus=0.5",
                   "resources.critics.num_cpus=0.5")
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 2.0}), "resources.learner_workers[0]",
                "trainer_node=1")


def test_bad_resources_buffer_resource_missing():
    # the buffer actor asked for it too, and would have waited forever
    cfg = cfg_with("resources.buffer_resources={buffer_node: 1}", "resources.samplers.num_cpus=0.5",
                   "resources.critics.num_cpus=0.5")
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 2.0}), "resources.buffer_resources",
                "buffer_node=1", "this machine has 0")


def test_bad_resources_pools_together_exceed_cpus():
    cfg = cfg_with("resources.samplers.num_actors=2")  # 2 samplers + 1 critic + 1 learner, 1 CPU each
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 2.0}), "resources.samplers[0..1] (2 x 1)",
                "resources.critics[0] (1)", "resources.learner_workers[0] (1)", "together ask for CPU=4",
                "this machine has 2", "resources.num_cpus", absent=("asks for",))  # each one alone fits


def test_bad_resources_pools_together_exceed_gpus():
    cfg = cfg_with("resources.samplers.num_gpus=1", "resources.learner_gpus=1", "resources.critics.num_cpus=0")
    clear_error(ConfigError, lambda: check_local_resources(cfg, {"CPU": 8.0, "GPU": 1.0}),
                "resources.samplers[0] (1)", "resources.learner_workers[0] (1)", "together ask for GPU=2",
                "this machine has 1")


def test_resources_that_fit_pass():
    """Not counted: the defaults on 4 CPUs, and fractions whose float sum rounds above the machine."""
    check_local_resources(cfg_with(), {"CPU": 4.0})
    cfg = cfg_with("resources.samplers.num_actors=3", "resources.samplers.num_cpus=0.4",
                   "resources.critics.num_cpus=0.6", "resources.learner_cpus=0.2",
                   "resources.critics.num_gpus=1", "resources.samplers.custom_resources={node_a: 0.25}")
    assert sum([0.4, 0.4, 0.4, 0.6, 0.2]) > 2.0  # float rounding: must not read as more than the machine has
    check_local_resources(cfg, {"CPU": 2.0, "GPU": 1.0, "node_a": 1.0, "memory": 1e9})


# ================================================================== checkpoints and model names


def make_ckpt(path: Path, *, config=True, weights=True, tokenizer=True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if config:
        (path / "config.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def test_bad_checkpoint_without_config(tmp_path):
    d = make_ckpt(tmp_path / "ck", config=False)
    clear_error(ModelError, lambda: check_checkpoint_dir(d), f"checkpoint {d}", "missing config.json")


def test_bad_checkpoint_without_weights(tmp_path):
    d = make_ckpt(tmp_path / "ck", weights=False)
    clear_error(ModelError, lambda: check_checkpoint_dir(d), f"checkpoint {d}", "missing weights",
                "model.safetensors or pytorch_model.bin")


def test_bad_checkpoint_without_tokenizer(tmp_path):
    d = make_ckpt(tmp_path / "ck", tokenizer=False)
    clear_error(ModelError, lambda: check_checkpoint_dir(d), f"checkpoint {d}", "missing tokenizer")


def test_bad_checkpoint_empty_dir(tmp_path):
    d = make_ckpt(tmp_path / "ck", config=False, weights=False, tokenizer=False)
    clear_error(ModelError, lambda: check_checkpoint_dir(d), f"checkpoint {d}", "config.json", "weights",
                "tokenizer")


def test_bad_checkpoint_weights_name_is_a_directory(tmp_path):
    d = make_ckpt(tmp_path / "ck", weights=False)
    (d / "model.safetensors").mkdir()
    clear_error(ModelError, lambda: check_checkpoint_dir(d), f"checkpoint {d}", "missing weights")


def test_bad_checkpoint_not_a_directory(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    clear_error(ModelError, lambda: check_checkpoint_dir(f), f"checkpoint {f}", "not a directory")


def test_bad_resolve_model_relative_path_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clear_error(ModelError, lambda: resolve_model("./nope"), "model path './nope' does not exist")


def test_bad_resolve_model_absolute_path_missing(tmp_path):
    p = str(tmp_path / "runs" / "rft" / "checkpoint")
    clear_error(ModelError, lambda: resolve_model(p), f"model path {p!r} does not exist")


def test_bad_resolve_model_nested_relative_path_missing(tmp_path, monkeypatch):
    # two slashes cannot be a hub id (org/name): it was passed on to vLLM as one
    monkeypatch.chdir(tmp_path)
    clear_error(ModelError, lambda: resolve_model("runs/default/rft/checkpoint"),
                "model path 'runs/default/rft/checkpoint' does not exist")


def test_bad_resolve_model_dir_missing_files(tmp_path):
    d = make_ckpt(tmp_path / "ck", tokenizer=False, weights=False)
    clear_error(ModelError, lambda: resolve_model(str(d)), f"checkpoint {d}", "weights", "tokenizer")


def test_bad_resolve_model_file_not_dir(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x00")
    clear_error(ModelError, lambda: resolve_model(str(f)), f"checkpoint {f}", "not a directory")


def test_bad_resolve_model_empty_name():
    clear_error(ModelError, lambda: resolve_model("  "), "model.name is empty", "expected embedded:NAME")


def test_bad_resolve_model_unknown_embedded():
    clear_error(ModelError, lambda: resolve_model("embedded:gpt-17"), "unknown embedded model 'gpt-17'",
                "smollm2-135m-instruct")
