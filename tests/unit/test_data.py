"""Loaders on real rows (shared GSM8K / MathUserEval), on small fixtures, and on bad input.

Expected values are recomputed from the raw files with plain json parsing, never
copied from the loader. Bad-input files are written to tmp_path by each test.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from core.config import DatasetSpec
from core.data import DataError, load_problems

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures"
GSM8K_TEST = SHARED / "gsm8k" / "test.jsonl"
MUE = SHARED / "mathusereval" / "math-user-eval.jsonl"

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared data folder {SHARED} is absent (real GSM8K / MathUserEval rows)"
)


def raw_rows(path: Path) -> list[tuple[int, dict]]:
    return [(i, json.loads(line)) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()]


def write_jsonl(path: Path, rows: list) -> Path:
    """rows: dicts (dumped) or str (written verbatim, for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def load(kind: str, path: Path | str, mode: str = "error", **kw):
    return load_problems(DatasetSpec(kind=kind, path=str(path), **kw), on_bad_row=mode)


GOOD_GSM = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
GOOD_MATH = {"problem": "What is $1+1$?", "solution": "$1+1=\\boxed{2}$", "level": "Level 1", "type": "Algebra"}


# ------------------------------------------------------------------ real rows


@needs_shared
def test_gsm8k_real_test_split():
    probs, report = load("gsm8k", GSM8K_TEST, split="test")
    rows = raw_rows(GSM8K_TEST)
    assert len(probs) == len(rows) == report.loaded
    assert report.skipped == []
    assert len({p.id for p in probs}) == len(probs)
    for p, (_, row) in zip(probs, rows):
        solution, final = row["answer"].rsplit("####", 1)
        assert p.question == row["question"]
        assert p.answer == final.strip().replace(",", "")
        assert re.fullmatch(r"-?\d+(\.\d+)?", p.answer), p.answer
        assert "<<" not in p.reference and ">>" not in p.reference  # calculator annotations stripped
        assert "####" not in p.reference
        assert p.reference.endswith(f"The answer is {p.answer}.")
        assert p.source == "gsm8k" and p.id.startswith("gsm8k-test-")
    # the solution text survives apart from the annotations
    first_solution = rows[0][1]["answer"].rsplit("####", 1)[0]
    assert re.sub(r"<<[^<>]*>>", "", first_solution).strip() in probs[0].reference


@needs_shared
def test_gsm8k_real_with_limit():
    probs, report = load("gsm8k", GSM8K_TEST, split="test", limit=25)
    assert len(probs) == report.loaded == 25
    assert [p.question for p in probs] == [r["question"] for _, r in raw_rows(GSM8K_TEST)[:25]]


@needs_shared
def test_mathusereval_real_file():
    probs, report = load("mathusereval", MUE)
    rows = raw_rows(MUE)
    assert len(probs) == len(rows) == report.loaded and report.skipped == []
    # question_id repeats across sources in the released file; ids must still be unique
    assert len({r["question_id"] for _, r in rows}) < len(rows)
    assert len({p.id for p in probs}) == len(probs)
    for p, (_, row) in zip(probs, rows):
        assert p.question == row["question"]
        assert p.reference == row["reference"]
        assert p.answer == ""  # no short final answer: graded by the critic
        assert p.category == f"{row['category']}/{row['subcategory']}"
        assert str(row["question_id"]) in p.id and row["source"] in p.id
        assert p.source == "mathusereval"


# ------------------------------------------------------------------ fixtures


def test_math_fixture():
    path = FIXTURES / "math_sample.jsonl"
    probs, report = load("math", path, split="test")
    rows = raw_rows(path)
    assert len(probs) == len(rows) == 5 and report.skipped == []
    answers = [p.answer for p in probs]
    assert answers[0] == "\\frac{5}{6}"
    assert answers[2] == "4"  # the last \boxed counts, not the earlier wrong guess
    assert answers[3].startswith("\\begin{pmatrix}") and answers[3].endswith("\\end{pmatrix}")
    for p, (_, row) in zip(probs, rows):
        assert p.question == row["problem"]
        assert p.reference == row["solution"]
        assert "\\boxed{" + p.answer + "}" in row["solution"]
        expected_cat = "/".join(x for x in (row.get("type"), row.get("level")) if x) or "math"
        assert p.category == expected_cat
    assert probs[4].category == "math"  # no level/type columns
    assert len({p.id for p in probs}) == 5


def test_gsm8k_fixture_strips_annotations_and_separators():
    path = FIXTURES / "gsm8k_sample.jsonl"
    probs, _ = load("gsm8k", path)
    rows = raw_rows(path)
    assert len(probs) == len(rows) == 3
    assert [p.answer for p in probs] == ["10", "1500", "35"]
    assert all("<<" not in p.reference for p in probs)
    assert "Tom has 3 * 4 = 12 apples." in probs[0].reference


def test_gsm8k_fixture_line_numbers_count_blank_lines(tmp_path):
    # the fixture has a blank line 3: the bad row after it is on line 5
    lines = (FIXTURES / "gsm8k_sample.jsonl").read_text().splitlines()
    assert lines[2] == ""
    bad = tmp_path / "g.jsonl"
    bad.write_text("\n".join(lines) + "\n" + json.dumps({"question": "q", "answer": "no hashes"}) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{bad}:5:")):
        load("gsm8k", bad)


GENERIC_COLUMNS = {"id": "uid", "question": "prompt", "answer": "target", "reference": "worked", "category": "topic"}


def test_generic_jsonl_with_column_mapping():
    path = FIXTURES / "generic_sample.jsonl"
    probs, report = load("jsonl", path, columns=GENERIC_COLUMNS)
    rows = raw_rows(path)
    assert report.loaded == len(rows) == 3
    for p, (_, row) in zip(probs, rows):
        assert p.id == row["uid"]
        assert p.question == row["prompt"]
        assert p.answer == str(row["target"])  # the file's own types: 42 stays "42"
        assert p.reference == row.get("worked", "")
        assert p.category == row["topic"]
        assert p.source == str(path)


def test_generic_parquet_with_column_mapping():
    pq = pytest.importorskip("pyarrow.parquet")
    path = FIXTURES / "generic_sample.parquet"
    table = pq.read_table(path).to_pylist()
    cols = {"id": "Id", "question": "Body", "answer": "FinalAnswer", "reference": "Explanation", "category": "Kind"}
    probs, report = load("jsonl", path, columns=cols)
    assert report.loaded == len(table) == len(probs)
    for p, row in zip(probs, table):
        assert (p.id, p.question, p.answer, p.reference, p.category) == (
            row["Id"], row["Body"], row["FinalAnswer"], row["Explanation"], row["Kind"])


def test_generic_without_mapping_uses_default_names_and_synthesises_ids(tmp_path):
    path = write_jsonl(tmp_path / "plain.jsonl", [{"question": "q1", "answer": "1"}, {"question": "q2"}])
    probs, _ = load("jsonl", path)
    assert [p.id for p in probs] == ["plain-0", "plain-1"]
    assert [p.answer for p in probs] == ["1", ""]


def test_generic_keeps_json_types_per_row(tmp_path):
    # through a columnar loader an int next to a float in the same column became "18.0"
    path = write_jsonl(tmp_path / "t.jsonl", [{"id": 1, "question": "a", "answer": 18},
                                               {"id": 2, "question": "b", "answer": 2.5}])
    probs, _ = load("jsonl", path)
    assert [(p.id, p.answer) for p in probs] == [("1", "18"), ("2", "2.5")]


def test_generated_kind():
    probs, report = load_problems(DatasetSpec(kind="generated", split="test", limit=12, levels=[3], seed=4))
    assert len(probs) == report.loaded == 12
    assert all(p.id.startswith("gen-test-") and p.category == "level3" for p in probs)


# ------------------------------------------------------------------ bad input: error mode


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_GSM, GOOD_GSM | {"question": "other"}, '{"question": "q", '])
    with pytest.raises(DataError) as ei:
        load("gsm8k", path)
    msg = str(ei.value)
    assert f"{path}:3:" in msg and "malformed JSON" in msg


def test_truncated_last_line(tmp_path):
    path = tmp_path / "trunc.jsonl"
    path.write_text(json.dumps(GOOD_GSM) + "\n" + json.dumps(GOOD_MATH)[:-15])  # no newline, cut short
    with pytest.raises(DataError) as ei:
        load("gsm8k", path)
    assert f"{path}:2:" in str(ei.value) and "truncated" in str(ei.value)


def test_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", [GOOD_GSM, ["a", "b"]])
    with pytest.raises(DataError, match=r":2: expected a JSON object, got list"):
        load("gsm8k", path)


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD_GSM).encode() + b"\n" + '{"question": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r":2: not valid UTF-8"):
        load("gsm8k", path)


@pytest.mark.parametrize(
    "kind,row,field,expected",
    [
        ("gsm8k", {"answer": "#### 3"}, "question", "missing field 'question'"),
        ("gsm8k", {"question": "q"}, "answer", "missing field 'answer'"),
        ("gsm8k", {"question": None, "answer": "#### 3"}, "question", "missing field 'question'"),
        ("math", {"problem": "p"}, "solution", "missing field 'solution'"),
        ("mathusereval", {"question": "q", "reference": "r"}, "category", "missing field 'category'"),
        ("jsonl", {"answer": "1"}, "question", "missing field 'question'"),
    ],
    ids=["gsm8k-question", "gsm8k-answer", "gsm8k-null-question", "math-solution", "mue-category", "generic-question"],
)
def test_missing_field(tmp_path, kind, row, field, expected):
    good = {"gsm8k": GOOD_GSM, "math": GOOD_MATH, "mathusereval": {"question": "q", "reference": "r", "category": "c"},
            "jsonl": {"question": "q"}}[kind]
    path = write_jsonl(tmp_path / "m.jsonl", [good, row])
    with pytest.raises(DataError) as ei:
        load(kind, path)
    msg = str(ei.value)
    assert f"{path}:2:" in msg and expected in msg and "expected" in msg.split(expected, 1)[1]


@pytest.mark.parametrize("value,typename", [(["a list"], "list"), ({"a": 1}, "dict"), (True, "bool")])
def test_wrong_type(tmp_path, value, typename):
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD_GSM, {"question": value, "answer": "#### 1"}])
    with pytest.raises(DataError) as ei:
        load("gsm8k", path)
    msg = str(ei.value)
    assert f"{path}:2:" in msg and "'question'" in msg and f"type {typename}" in msg and "expected" in msg


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question(tmp_path, question):
    path = write_jsonl(tmp_path / "e.jsonl", [{"question": question, "answer": "#### 1"}])
    with pytest.raises(DataError, match=r":1: field 'question' is empty, expected a non-empty string"):
        load("gsm8k", path)


def test_gsm8k_answer_without_hashes(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [GOOD_GSM, {"question": "q", "answer": "It is 5."}])
    with pytest.raises(DataError) as ei:
        load("gsm8k", path)
    assert f"{path}:2:" in str(ei.value) and "'answer'" in str(ei.value) and "####" in str(ei.value)


def test_gsm8k_empty_final_answer(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "work\n####   "}])
    with pytest.raises(DataError, match=r":1: field 'answer' has an empty '####' answer"):
        load("gsm8k", path)


@pytest.mark.parametrize("solution", ["The answer is 4.", "so \\boxed{", "\\boxed{}"])
def test_math_solution_without_boxed(tmp_path, solution):
    path = write_jsonl(tmp_path / "m.jsonl", [GOOD_MATH, {"problem": "p", "solution": solution}])
    with pytest.raises(DataError) as ei:
        load("math", path)
    assert f"{path}:2:" in str(ei.value) and "'solution'" in str(ei.value) and "\\boxed" in str(ei.value)


def test_duplicate_ids_generic(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "question": "q1"}, {"id": "b", "question": "q2"},
                                               {"id": "a", "question": "q3"}])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: duplicate problem id 'a'")):
        load("jsonl", path)


def test_duplicate_ids_mathusereval(tmp_path):
    row = {"question_id": 7, "source": "s", "question": "q", "reference": "r", "category": "c"}
    other_source = row | {"source": "t"}
    path = write_jsonl(tmp_path / "d.jsonl", [row, other_source, row | {"question": "again"}])
    with pytest.raises(DataError, match=r":3: duplicate problem id"):
        load("mathusereval", path)


# ------------------------------------------------------------------ bad input: skip mode


def test_skip_mode_counts_each_bad_row_with_its_reason(tmp_path):
    rows = [
        GOOD_GSM,                                        # 1 ok
        '{"question": "broken", ',                       # 2 malformed JSON
        {"question": "q", "answer": "no hashes"},       # 3 no ####
        {"question": ["x"], "answer": "#### 1"},        # 4 wrong type
        {"answer": "#### 1"},                           # 5 missing question
        GOOD_GSM | {"question": "another"},             # 6 ok
        {"question": "  ", "answer": "#### 2"},         # 7 empty question
        GOOD_GSM | {"question": "third"},               # 8 ok
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    path.write_text(path.read_text() + '{"question": "cut off", "ans')  # 9 truncated last line
    probs, report = load("gsm8k", path, mode="skip")
    assert [p.question for p in probs] == [GOOD_GSM["question"], "another", "third"]
    assert report.loaded == 3
    assert len(report.skipped) == 6
    expect = {2: "malformed JSON", 3: "####", 4: "type list", 5: "missing field 'question'",
              7: "is empty", 9: "malformed JSON"}
    for line, reason in expect.items():
        hits = [s for s in report.skipped if s.startswith(f"{path}:{line}:")]
        assert len(hits) == 1 and reason in hits[0], (line, report.skipped)
    assert "skipped 6 bad rows" in report.summary()


def test_skip_mode_duplicates_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "question": "q1"}, {"id": "a", "question": "q2"}])
    probs, report = load("jsonl", path, mode="skip")
    assert [p.question for p in probs] == ["q1"]
    assert len(report.skipped) == 1 and "duplicate problem id 'a'" in report.skipped[0]


def test_skip_mode_with_no_good_rows_still_fails(tmp_path):
    path = write_jsonl(tmp_path / "allbad.jsonl", ['{"x', {"question": "q"}])
    with pytest.raises(DataError, match="no usable problems"):
        load("gsm8k", path, mode="skip")


def test_skip_mode_does_not_skip_a_bad_column_mapping(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q"}])
    for mode in ("error", "skip"):
        with pytest.raises(DataError) as ei:
            load("jsonl", path, mode=mode, columns={"questoin": "question"})
        assert str(ei.value).startswith("data.columns: unknown target field(s) ['questoin']"), str(ei.value)


def test_limit_counts_loaded_problems_not_rows(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", ['{"bad', GOOD_GSM, GOOD_GSM | {"question": "b"},
                                               GOOD_GSM | {"question": "c"}])
    probs, report = load("gsm8k", path, mode="skip", limit=2)
    assert [p.question for p in probs] == [GOOD_GSM["question"], "b"] and len(report.skipped) == 1


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize("path", ["/nonexistent/dir/problems.jsonl", "data/missing.jsonl", "missing", "./rel/x.parquet"])
def test_nonexistent_path(path):
    with pytest.raises(DataError, match=re.escape(repr(path))):
        load("jsonl", path)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 to fail fast offline")
def test_unreachable_hub_id_is_a_data_error():
    with pytest.raises(DataError, match=r"could not load 'no-such-org/no-such-dataset'"):
        load("hub", "no-such-org/no-such-dataset")


def test_empty_path_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="needs a path"):
        load_problems(DatasetSpec(kind="gsm8k"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no usable problems"):
        load("gsm8k", empty)


def test_bad_on_bad_row_value(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [GOOD_GSM])
    with pytest.raises(ValueError, match="on_bad_row"):
        load("gsm8k", path, mode="ignore")


# ------------------------------------------------------------------ hub-style sets: config name and revision


def _gsm8k_rows(split: str, n: int = 12) -> list[dict]:
    """Real GSM8K rows from the shared folder, or the committed fixture's rows without it."""
    src = SHARED / "gsm8k" / f"{split}.jsonl"
    rows = [r for _, r in raw_rows(src if src.is_file() else FIXTURES / "gsm8k_sample.jsonl")]
    return rows[:n] if src.is_file() else [{**r, "question": f"{split}: {r['question']}"} for r in rows]


def hub_copy(root: Path, splits=("train", "test")) -> Path:
    """A local copy laid out like the hub repo openai/gsm8k: a dataset card whose `configs`
    metadata maps each config (main, socratic) and split to `<config>/<split>-*.parquet`.
    The socratic rows are marked, so loading the wrong config shows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    card = {"configs": []}
    for config in ("main", "socratic"):
        files = []
        for split in splits:
            rows = [r if config == "main" else {**r, "question": "SOCRATIC " + r["question"]}
                    for r in _gsm8k_rows(split)]
            out = root / config / f"{split}-00000-of-00001.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), out)
            files.append({"split": split, "path": f"{config}/{split}-*"})
        card["configs"].append({"config_name": config, "data_files": files})
    (root / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n# GSM8K (test copy)\n")
    return root


def test_gpu_profile_data_spec_loads_hub_style_copy_with_config_main(tmp_path):
    from core.config import load_config

    copy = hub_copy(tmp_path / "gsm8k")
    cfg = load_config(ROOT / "configs" / "gpu-cluster.yaml")
    assert cfg.data.train.config == cfg.data.test.config == "main"
    for spec in (cfg.data.train, cfg.data.test):
        probs, report = load_problems(spec.model_copy(update={"path": str(copy)}))
        rows = _gsm8k_rows(spec.split)
        assert [p.question for p in probs] == [r["question"] for r in rows]  # main, not socratic
        assert [p.answer for p in probs] == [r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
                                             for r in rows]
        assert report.loaded == len(rows) and probs[0].id == f"gsm8k-{spec.split}-0"


def test_hub_style_copy_other_config_is_loaded_when_named(tmp_path):
    copy = hub_copy(tmp_path / "gsm8k", splits=("test",))
    probs, _ = load("gsm8k", copy, split="test", config="socratic")
    assert probs and all(p.question.startswith("SOCRATIC ") for p in probs)


@pytest.mark.parametrize("config,expected", [(None, "no config name"), ("nope", "config 'nope'")])
def test_hub_style_copy_without_or_with_unknown_config(tmp_path, config, expected):
    copy = hub_copy(tmp_path / "gsm8k", splits=("test",))
    with pytest.raises(DataError, match=re.escape(f"could not load {str(copy)!r} ({expected}, split 'test')")) as e:
        load("gsm8k", copy, split="test", config=config)
    assert "main" in str(e.value) and "socratic" in str(e.value)  # datasets names the configs there are


def test_hub_load_args_pass_revision_to_hub_ids_only():
    from core.data import hub_load_args

    spec = DatasetSpec(kind="gsm8k", path="openai/gsm8k", config="main", revision="v1.0", split="test")
    assert hub_load_args(spec, local=False) == {"name": "main", "split": "test", "revision": "v1.0"}
    assert hub_load_args(spec, local=True) == {"name": "main", "split": "test"}
    plain = DatasetSpec(kind="hub", path="org/set")
    assert hub_load_args(plain, local=False) == {"name": None, "split": "train"}


def test_local_copy_reports_that_the_revision_does_not_apply(tmp_path):
    copy = hub_copy(tmp_path / "gsm8k", splits=("test",))
    _, report = load("gsm8k", copy, split="test", config="main", revision="abc123")
    assert "revision 'abc123' applies to hub ids only" in report.summary()


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 to fail fast offline")
def test_unreachable_hub_id_names_config_and_revision():
    with pytest.raises(DataError, match=re.escape("(config 'main', split 'test', revision 'v9')")):
        load("gsm8k", "no-such-org/gsm8k", split="test", config="main", revision="v9")
