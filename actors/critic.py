"""Critic actor: the rule grader (math-verify) plus the Math-Critique judge on vLLM."""

from __future__ import annotations

import os
import time

from actors.engine import Engine, SamplingSpec
from actors.pool import end_for_restart, restart_on_engine_death
from core.answers import AnswerChecker
from core.grading import combine_grades, judge_needed, parse_judge_output, rule_grade
from core.prompts import judge_messages
from core.records import Grade, GradedSample, Sample


class CriticWorker:
    """Grades samples. The judge engine is only started when the policy needs it.

    Judge output is untrusted: anything without a parseable score is recorded as
    ungraded with its reason; it never raises.
    """

    def __init__(self, policy: str, judge_path: str | None, judge_version: str, engine_kwargs: dict,
                 max_new_tokens: int = 64, threshold: float = 6.0, answer_timeout_s: float = 5.0,
                 judge_rule_failures: bool = True, calculator: bool = False):
        self.policy = policy
        self.calculator = calculator
        self.judge_rule_failures = judge_rule_failures
        self.checker = AnswerChecker(timeout_s=answer_timeout_s)
        self.judge = Engine(judge_path, **engine_kwargs) if policy != "rule" and judge_path else None
        if self.judge is not None:  # a dead judge engine ends the actor; Ray restarts it
            self.judge.watch(end_for_restart)
        self.judge_version = judge_version
        self.spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        self.threshold = threshold
        self.pid = os.getpid()

    @restart_on_engine_death
    def ensure_checkpoint(self, model_path: str, version: str) -> float:
        if self.judge is None or version == self.judge_version:
            return 0.0
        secs = self.judge.load_weights(model_path)
        self.judge_version = version
        return secs

    def set_policy(self, policy: str, judge_rule_failures: bool | None = None) -> None:
        self.policy = policy
        if judge_rule_failures is not None:
            self.judge_rule_failures = judge_rule_failures

    def _model_grades(self, samples: list[Sample]) -> list[Grade | None]:
        if self.judge is None:
            return [None] * len(samples)
        outs = self.judge.generate([judge_messages(s.problem, s.response, self.calculator) for s in samples], self.spec)
        grades = []
        for comps in outs:
            g = parse_judge_output(comps[0].text, self.threshold)
            if g.score is None:
                g.analysis = g.analysis or comps[0].text[:300]  # keep the raw text for the audit
            g.grader = f"model:{self.judge_version}"
            grades.append(g)
        return grades

    @restart_on_engine_death
    def grade(self, samples: list[Sample], checkpoint: tuple[str, str] | None = None):
        if checkpoint:
            self.ensure_checkpoint(*checkpoint)
        t0 = time.perf_counter()
        need_rule = self.policy in ("rule", "rule_else_model", "both", "model_rule_cap")
        rules = [rule_grade(self.checker.check(s.response, s.problem.answer)) if need_rule and s.problem.answer
                 else None for s in samples]
        todo = judge_needed(self.policy, rules, self.judge_rule_failures)
        models: list[Grade | None] = [None] * len(samples)
        for i, g in zip(todo, self._model_grades([samples[i] for i in todo])):
            models[i] = g
        graded = [GradedSample(s, combine_grades(self.policy, r, m, bool(s.problem.answer)))
                  for s, r, m in zip(samples, rules, models)]
        summary = {"graded": len(graded), "ungraded": sum(g.grade.score is None for g in graded),
                   "judged": len(todo), "seconds": time.perf_counter() - t0, "pid": self.pid}
        return summary, graded

    @restart_on_engine_death
    def judge_texts(self, samples: list[Sample]) -> list[Grade | None]:
        """Model grades only (critic accuracy is measured against rule labels)."""
        return self._model_grades(samples)

    def ping(self) -> int:
        return self.pid
