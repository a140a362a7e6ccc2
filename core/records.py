"""The few plain record types that carry data from the dataset to the learner.

Everything that crosses an actor boundary or lands in the run directory is one of
these, so a reader who knows them can follow a sample end to end. They are plain
dataclasses (cheap to pickle through Ray's object store) with a JSON round trip for
the lineage files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["correct", "incorrect", "unknown"]


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    reference: str = ""  # reference solution text (may be a full worked solution)
    answer: str = ""  # final answer only; empty when the source has none
    category: str = ""
    source: str = ""
    steps: str = ""  # worked steps as "a op b = c" lines (GSM8K's <<...>> annotations); else read from reference


@dataclass
class Sample:
    """One response of the policy to one problem."""

    problem: Problem
    sample_index: int
    response: str
    token_ids: list[int] = field(default_factory=list)
    prompt_token_ids: list[int] = field(default_factory=list)
    policy_version: str = ""
    finish_reason: str = ""

    @property
    def key(self) -> str:
        """Identity used for exactly-once accounting: one per prompt x sample index."""
        return f"{self.problem.id}#{self.sample_index}"


@dataclass
class Grade:
    score: float | None  # 1-10, None when ungraded
    verdict: Verdict
    analysis: str = ""
    grader: str = ""  # "rule", "model", "rule+model", ...
    reason: str = ""  # why this verdict / why ungraded
    agreement: bool | None = None  # rule vs model, when both ran
    rule_verdict: str = ""  # what the answer check said, recorded beside a critic grade ("" when it did not run)
    model_score: float | None = None  # the judge's own score before the rule could lower it


@dataclass
class GradedSample:
    sample: Sample
    grade: Grade
    kept: bool | None = None
    keep_reason: str = ""

    @property
    def key(self) -> str:
        return self.sample.key


@dataclass
class Pair:
    """A DPO preference pair; reference log-probs are cached on it once computed."""

    problem: Problem
    messages: list[dict]  # the chat prompt both responses answer
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    chosen_key: str
    rejected_key: str
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None

    @property
    def key(self) -> str:
        return f"{self.chosen_key}>{self.rejected_key}"


@dataclass
class SFTExample:
    """A prompt/response pair for supervised training (RFT data or critique text)."""

    key: str
    messages: list[dict]  # chat prompt (system/user turns)
    response: str


# ---------------------------------------------------------------- JSON round trip


def to_json(obj: Any) -> dict:
    d = asdict(obj)
    d["__type__"] = type(obj).__name__
    return d


def lineage_json(g: GradedSample) -> dict:
    """The lineage line for a graded sample: everything but the token id lists.

    Token ids are the bulk of a sample and are re-derivable from the text; copying them
    with asdict dominated the buffer's per-sample cost. Their counts are kept.
    """
    s = g.sample
    return {
        "__type__": "GradedSample",
        "sample": {"problem": asdict(s.problem), "sample_index": s.sample_index, "response": s.response,
                   "policy_version": s.policy_version, "finish_reason": s.finish_reason,
                   "n_tokens": len(s.token_ids), "n_prompt_tokens": len(s.prompt_token_ids)},
        "grade": asdict(g.grade),
        "kept": g.kept,
        "keep_reason": g.keep_reason,
    }


def from_json(d: dict) -> Any:
    d = dict(d)
    kind = d.pop("__type__")
    if kind == "Problem":
        return Problem(**d)
    if kind == "Sample":
        return Sample(**{**d, "problem": Problem(**d["problem"])})
    if kind == "Grade":
        return Grade(**d)
    if kind == "GradedSample":
        s = {k: v for k, v in d["sample"].items() if k not in ("n_tokens", "n_prompt_tokens")}
        return GradedSample(
            sample=Sample(**{**s, "problem": Problem(**s["problem"])}),
            grade=Grade(**d["grade"]),
            kept=d.get("kept"),
            keep_reason=d.get("keep_reason", ""),
        )
    if kind == "Pair":
        return Pair(**{**d, "problem": Problem(**d["problem"])})
    if kind == "SFTExample":
        return SFTExample(**d)
    raise ValueError(f"unknown record type {kind!r}")
