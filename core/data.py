"""Problem loaders: GSM8K, MATH, MathUserEval, generic JSONL/Parquet, the generator.

Hub ids and Parquet go through HF `datasets`. Local JSONL is read line by line with
the json module, so that a malformed line or a missing field is reported with the
file, the line number, the field and what was expected, and every value keeps the
type it has in the file (`datasets` would unify a column's types across rows and
turn an integer answer 18 into "18.0" when another row holds 2.5). With
on_bad_row="skip" bad rows are counted with their reasons in a LoadReport; nothing
is dropped silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.config import DatasetSpec
from core.records import Problem

_CALC_RE = re.compile(r"<<[^<>]*>>")


class DataError(ValueError):
    """A bad input row, located precisely."""


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)  # one human-readable reason per row

    def summary(self) -> str:
        s = f"{self.source}: loaded {self.loaded} problems"
        if self.skipped:
            s += f", skipped {len(self.skipped)} bad rows (first: {self.skipped[0]})"
        return s


# ------------------------------------------------------------------ raw row sources


# "org/name": one slash, no file extension (a missing "data/x.jsonl" is a typo, not a hub id)
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_-]")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".arrow")


def _scan_jsonl(path: Path, report: LoadReport, strict: bool) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line; syntax errors raise or are counted."""
    rows: list[tuple[int, dict]] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            problem = None
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    problem = f"expected a JSON object, got {type(row).__name__}"
            except UnicodeDecodeError as e:
                problem = f"not valid UTF-8 ({e.reason} at byte {e.start})"
            except json.JSONDecodeError as e:
                problem = f"malformed JSON ({e.msg} at column {e.colno}); truncated line?"
            except RecursionError:  # json recurses per nesting level: [[[[...]]]] would crash the loader
                problem = "malformed JSON (nested too deeply to parse)"
            if problem:
                msg = f"{path}:{lineno}: {problem}"
                if strict:
                    raise DataError(msg)
                report.skipped.append(msg)
                continue
            rows.append((lineno, row))
    return rows


def check_source(path: str, key: str) -> None:
    """Fail now, naming the config key, if `path` can be neither a local file nor a hub id."""
    if path and not Path(path).exists() and (not _HUB_ID_RE.fullmatch(path) or path.endswith(_FILE_SUFFIXES)):
        raise DataError(f"{key}: {path!r} is neither an existing file/directory nor a hub id (org/name)")


def hub_load_args(spec: DatasetSpec, local: bool) -> dict:
    """Keyword arguments for `datasets.load_dataset(path, ...)`: config name, split, and
    for a hub id the repo revision (a local copy is whatever revision was copied)."""
    args: dict = {"name": spec.config, "split": spec.split}
    if spec.revision and not local:
        args["revision"] = spec.revision
    return args


def _describe(spec: DatasetSpec) -> str:
    parts = [f"config {spec.config!r}" if spec.config else "no config name", f"split {spec.split!r}"]
    return ", ".join(parts + ([f"revision {spec.revision!r}"] if spec.revision else []))


def _load_rows(spec: DatasetSpec, report: LoadReport, strict: bool) -> Iterable[tuple[str, dict]]:
    """Yield (location, row). Location names the file and line (or split and row)."""
    path = spec.path
    if not path:
        raise DataError(f"data: kind={spec.kind!r} needs a path (a local file or a hub id)")
    p = Path(path)
    if p.is_file() and p.suffix in (".jsonl", ".json"):
        for lineno, row in _scan_jsonl(p, report, strict):
            yield f"{p}:{lineno}", row
        return
    check_source(path, "data")
    import datasets

    if p.exists() and spec.revision:
        report.source += f" (a local copy: revision {spec.revision!r} applies to hub ids only)"
    try:
        if p.is_file() and p.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files=str(p), split="train")
            where = str(p)
        else:
            ds = datasets.load_dataset(path, **hub_load_args(spec, local=p.exists()))
            where = f"{path}[{spec.config + '/' if spec.config else ''}{spec.split}]"
    except Exception as e:  # offline, unknown dataset or config, unreadable file: say which input
        raise DataError(f"data: could not load {path!r} ({_describe(spec)}): {type(e).__name__}: {e}") from e
    for i, row in enumerate(ds):
        yield f"{where} row {i}", row


# ------------------------------------------------------------------ field helpers


def _field(row: dict, name: str, where: str, expected: str = "a non-empty string", optional=False,
           numbers=True) -> str:
    """A field as text. numbers=False for prose (a question, a solution): 42 there is a
    broken row, not a question; ids, answers and levels may be numbers."""
    if name not in row or row[name] is None:
        if optional:
            return ""
        raise DataError(f"{where}: missing field {name!r}, expected {expected}")
    v = row[name]
    if isinstance(v, bool) or not isinstance(v, (str, int, float) if numbers else str):
        raise DataError(f"{where}: field {name!r} has type {type(v).__name__}, expected {expected}")
    if isinstance(v, float) and not math.isfinite(v):  # JSON NaN/Infinity would become "nan"/"inf"
        raise DataError(f"{where}: field {name!r} is {v}, expected {expected}")
    v = str(v)
    if not optional and not v.strip():
        raise DataError(f"{where}: field {name!r} is empty, expected {expected}")
    return v


def _last_boxed(text: str) -> str:
    from core.answers import _last_boxed as lb

    return (lb(text) or "").strip()


# ------------------------------------------------------------------ row parsers


def _gsm8k(row: dict, where: str, idx: int, spec: DatasetSpec) -> Problem:
    q = _field(row, "question", where, numbers=False)
    a = _field(row, "answer", where, "a solution ending in '#### <answer>'", numbers=False)
    if "####" not in a:
        raise DataError(f"{where}: field 'answer' has no '#### <answer>' line, expected a GSM8K solution")
    sol, final = a.rsplit("####", 1)
    final = final.strip().replace(",", "")
    if not final:
        raise DataError(f"{where}: field 'answer' has an empty '####' answer")
    steps = "\n".join(m[2:-2] for m in _CALC_RE.findall(sol))  # the judge's check of intermediate results
    sol = _CALC_RE.sub("", sol).strip()
    return Problem(f"gsm8k-{spec.split}-{idx}", q, f"{sol}\nThe answer is {final}.", final, "gsm8k", "gsm8k",
                   steps=steps)


def _math(row: dict, where: str, idx: int, spec: DatasetSpec) -> Problem:
    q = _field(row, "problem", where, numbers=False)
    sol = _field(row, "solution", where, "a solution containing \\boxed{...}", numbers=False)
    final = _last_boxed(sol)
    if not final:
        raise DataError(f"{where}: field 'solution' has no \\boxed{{...}} answer")
    level = _field(row, "level", where, optional=True)
    typ = _field(row, "type", where, optional=True)
    cat = "/".join(x for x in (typ, level) if x) or "math"
    return Problem(f"math-{spec.split}-{idx}", q, sol, final, cat, "math")


def _mathusereval(row: dict, where: str, idx: int, spec: DatasetSpec) -> Problem:
    q = _field(row, "question", where, numbers=False)
    ref = _field(row, "reference", where, numbers=False)
    cat = _field(row, "category", where)
    sub = _field(row, "subcategory", where, optional=True)
    qid = _field(row, "question_id", where, optional=True) or str(idx)
    # question_id is unique only within a source (the released file has both an
    # alignbench 125 and a matheval 125), so the source is part of the id.
    src = _field(row, "source", where, optional=True)
    category = f"{cat}/{sub}" if sub else cat
    return Problem(f"mue-{src}-{qid}" if src else f"mue-{qid}", q, ref, "", category, "mathusereval")


_GENERIC_FIELDS = ("id", "question", "reference", "answer", "category")


def _check_columns(spec: DatasetSpec) -> None:
    unknown = set(spec.columns) - set(_GENERIC_FIELDS)
    if unknown:
        raise DataError(f"data.columns: unknown target field(s) {sorted(unknown)}; "
                        "expected some of id, question, reference, answer, category")


def _generic(row: dict, where: str, idx: int, spec: DatasetSpec) -> Problem:
    cols = {**{f: f for f in _GENERIC_FIELDS}, **spec.columns}
    _check_columns(spec)
    q = _field(row, cols["question"], where, numbers=False)
    pid = _field(row, cols["id"], where, optional=True) or f"{Path(spec.path).stem}-{idx}"
    return Problem(
        str(pid), q,
        _field(row, cols["reference"], where, optional=True),
        _field(row, cols["answer"], where, optional=True).strip(),
        _field(row, cols["category"], where, optional=True),
        spec.path,
    )


PARSERS: dict[str, Callable[[dict, str, int, DatasetSpec], Problem]] = {
    "gsm8k": _gsm8k, "math": _math, "mathusereval": _mathusereval, "jsonl": _generic, "hub": _generic,
}


def load_problems(spec: DatasetSpec, on_bad_row: str = "error") -> tuple[list[Problem], LoadReport]:
    """Load problems per the spec; returns them with a report of anything skipped."""
    from core.problem_gen import generate_problems

    if spec.kind == "generated":
        n = spec.limit or 1000
        probs = generate_problems(n, spec.split, tuple(spec.levels), spec.seed)
        return probs, LoadReport(f"generated[{spec.split}]", loaded=len(probs))
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    strict = on_bad_row == "error"
    report = LoadReport(spec.path or spec.kind)
    parse = PARSERS[spec.kind]
    if parse is _generic:
        _check_columns(spec)  # a config mistake, not a bad row: never skipped
    out: list[Problem] = []
    seen: set[str] = set()
    for idx, (where, row) in enumerate(_load_rows(spec, report, strict)):
        try:
            prob = parse(row, where, idx, spec)
            if prob.id in seen:
                raise DataError(f"{where}: duplicate problem id {prob.id!r}")
            seen.add(prob.id)
        except DataError as e:
            if strict:
                raise
            report.skipped.append(str(e))
            continue
        out.append(prob)
        if spec.limit and len(out) >= spec.limit:
            break
    report.loaded = len(out)
    if not out:
        raise DataError(f"{report.source}: no usable problems" + (f" ({report.skipped[0]})" if report.skipped else ""))
    return out, report
