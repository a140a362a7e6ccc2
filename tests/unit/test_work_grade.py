"""Truthful bands for the critic's labels, the counterfactual copies, and the critic's metrics."""

from __future__ import annotations

import pytest

from core.critic_eval import auc, balanced_pick, band_of, critic_report, heldout_probe, selection_summary
from core.critique_data import answer_swapped, flawed_copy, reworded_solution, slip_copy
from core.problem_gen import generate_problems
from core.records import Grade, GradedSample, Problem, Sample
from core.work_grade import grade_work

ONE = Problem("a", "Sam has 12 marbles and finds 7 more. How many marbles does Sam have now?",
              "Sam has 12 + 7 = 19 marbles.\nThe answer is 19.", "19")
TWO = Problem("b", "Mia buys 3 bags with 4 pens in each, then gets 5 more pens. How many pens does Mia have?",
              "Mia buys 3 x 4 = 12 pens. Then 12 + 5 = 17 pens.\nThe answer is 17.", "17")
GSM = Problem("g", "Natalia sold 48 clips in April and half as many in May. How many in all?",
              "In May she sold 48/2 = 24 clips. In all 48+24 = 72.\nThe answer is 72.", "72",
              steps="48/2=24\n48+24=72")

BANDS = [
    (ONE, "12 + 7 = 19. The answer is 19.", "correct", 10),
    (ONE, "The answer is 19.", "correct", 9),
    (ONE, "12 + 7 = 20, so 19. The answer is 19.", "correct", 5),  # right answer, false step
    (ONE, "12 + 9 = 21 and 21 - 2 = 19. The answer is 19.", "correct", 6),  # a number from nowhere
    (ONE, "12 + 7 = 20. The answer is 20.", "incorrect", 4),  # right set-up, one slip
    (ONE, "12 + 7 = 19. The answer is 18.", "incorrect", 3),  # right steps, answer miscopied
    (ONE, "12 - 7 = 5. The answer is 5.", "incorrect", 2),  # wrong operation
    (ONE, "12 - 7 = 4. The answer is 4.", "incorrect", 2),
    (ONE, "The answer is 5.", "incorrect", 2),
    (ONE, "I do not know.", "incorrect", 1),
    (TWO, "3 x 4 = 12. 12 + 5 = 17. The answer is 17.", "correct", 10),
    (TWO, "3 x 4 = 13. 13 + 5 = 18... no, The answer is 17.", "correct", 5),
    (TWO, "3 x 4 = 13. 13 + 5 = 18. The answer is 18.", "incorrect", 4),  # slip carried forward
    (TWO, "3 x 4 = 12. The answer is 12.", "incorrect", 2),  # stopped half way
    (TWO, "3 x 4 = 13. 13 + 5 = 19. The answer is 19.", "incorrect", 2),  # two false steps
    (GSM, "48 / 2 = 24 and 24 + 48 = 72. The answer is 72.", "correct", 10),
    (GSM, "48 / 2 = 24 and 24 + 48 = 73. The answer is 73.", "incorrect", 4),
]


@pytest.mark.parametrize("problem,response,verdict,score", BANDS)
def test_bands(problem, response, verdict, score):
    wg = grade_work(problem, response, verdict)
    assert wg.score == score, wg.analysis
    assert wg.critique.endswith(f"\nScore: {score}")


def test_analysis_names_the_first_wrong_step_and_is_true():
    wg = grade_work(TWO, "3 x 4 = 13. 13 + 5 = 19. The answer is 19.", "incorrect")
    assert wg.analysis.startswith("Step 3 x 4 = 13; reference 3 x 4 = 12; wrong, 3 x 4 is 12. Final answer 19;")
    assert "Final answer 19; reference 17; they differ." in wg.analysis
    ok = grade_work(TWO, "3 x 4 = 12. 12 + 5 = 17. The answer is 17.", "correct")
    assert ok.analysis == ("Step 3 x 4 = 12; reference 3 x 4 = 12; right. Step 12 + 5 = 17; reference 12 + 5 = 17; "
                           "right. Final answer 17; reference 17; they match.")
    off = grade_work(ONE, "12 - 7 = 5. The answer is 5.", "incorrect")
    assert off.analysis.startswith("Step 12 - 7 = 5; not in the reference; right.")


def test_unknown_verdict_gives_no_label():
    assert grade_work(ONE, "12 + 7 = 19. The answer is 19.", "unknown") is None


def test_copies_change_the_band_they_claim():
    for p in generate_problems(30, levels=(1, 2, 3)):
        assert grade_work(p, p.reference, "correct").score == 10
        flawed = flawed_copy(p.reference, p.id)
        assert grade_work(p, flawed, "correct").score == 5
        slip = slip_copy(p.reference, p.id)
        assert grade_work(p, slip, "incorrect").score == 4
        assert grade_work(p, reworded_solution(p), "correct").score == 10
    text, verdict = answer_swapped("12 + 7 = 19. The answer is 19.", ONE, True, "s")
    assert verdict == "incorrect" and grade_work(ONE, text, verdict).score == 3
    assert answer_swapped("no answer here", ONE, True, "s") is None


def test_flawed_copy_keeps_the_final_answer_or_gives_up():
    assert flawed_copy("12 + 7 = 19", "s") is None  # the step's result is the final answer
    assert flawed_copy("The answer is 19.", "s") is None  # no step to change


def _g(problem, i, response, verdict):
    return GradedSample(Sample(problem, i, response), Grade(9.0 if verdict == "correct" else 2.0, verdict))


def test_heldout_probe_tops_up_the_passing_class_and_adds_flawed_copies():
    probs = generate_problems(10, levels=(1, 2))
    graded = [_g(p, 0, "The answer is 0.", "incorrect") for p in probs]
    items = heldout_probe(graded, keep_threshold=7, min_per_class=15)
    kinds = [it.kind for it in items]
    assert kinds.count("sampled") == 10 and kinds.count("reference") == 10 and kinds.count("reworded") == 10
    assert kinds.count("flawed") == 20 and all(it.truth.score == 5 for it in items if it.kind == "flawed")
    assert len({it.key for it in items}) == len(items)
    few = heldout_probe(graded, keep_threshold=7, min_per_class=5)
    assert [it.kind for it in few].count("reworded") == 0
    assert [it.kind for it in heldout_probe(graded, keep_threshold=7, add_references=False)] == ["sampled"] * 10


def test_critic_report_catches_a_critic_that_calls_everything_wrong():
    probs = generate_problems(10, levels=(1, 2))
    items = heldout_probe([_g(p, 0, "The answer is 0.", "incorrect") for p in probs], keep_threshold=7)
    always_wrong = critic_report(items, {it.key: 2.0 for it in items}, 7)
    assert always_wrong["critic_balanced_accuracy"] == 0.5 and always_wrong["critic_auc"] == 0.5
    assert always_wrong["flawed_work_detection"] == 0.0
    perfect = critic_report(items, {it.key: float(it.truth.score) for it in items}, 7)
    assert perfect["critic_balanced_accuracy"] == 1.0 and perfect["flawed_work_detection"] == 1.0
    assert perfect["critic_bands_used"] == ["1-2", "3-5", "9-10"]
    answer_only = critic_report(items, {it.key: 9.0 if it.rule_verdict == "correct" else 2.0 for it in items}, 7)
    assert answer_only["critic_auc"] == 1.0 and answer_only["flawed_work_detection"] == 0.0
    unreadable = critic_report(items, {}, 7)
    assert unreadable["critic_ungraded"] == len(items) and unreadable["critic_balanced_accuracy"] == 0.5


def test_auc_and_bands():
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1], [1]) == 0.5 and auc([], [1]) is None
    assert [band_of(x) for x in (1, 2.5, 3, 5.9, 6, 8.5, 9, 10)] == ["1-2"] * 2 + ["3-5"] * 2 + ["6-8"] * 2 + \
        ["9-10"] * 2


def test_balanced_pick_takes_both_classes_spread_out():
    probs = generate_problems(20, levels=(1,))
    graded = [_g(p, 0, "x", "correct" if i % 5 == 0 else "incorrect") for i, p in enumerate(probs)]
    pick = balanced_pick(graded, 10)
    assert len(pick) == 10 and sum(g.grade.verdict == "correct" for g in pick) == 4
    assert len({g.key for g in pick}) == 10


def test_selection_summary_counts_who_decided_and_disagreements():
    from core.grading import combine_grades, parse_judge_output

    rule_right, rule_wrong = Grade(9.0, "correct", grader="rule"), Grade(2.0, "incorrect", grader="rule")
    gs = []
    for i, (score, rule) in enumerate([(9, rule_right), (5, rule_right), (9, rule_wrong), (2, rule_wrong)]):
        g = combine_grades("model_rule_cap", rule, parse_judge_output(f"ok\nScore: {score}", 7), True)
        gs.append(GradedSample(Sample(ONE, i, "r"), g, kept=(i == 0)))
    s = selection_summary(gs, 7)
    assert s["decided_by_kept"] == {"model": 1} and s["lowered_by_rule"] == 1
    # the lineage is written before the group decision: kept keys can come from the decisions log
    assert selection_summary(gs, 7, {"a#2"})["decided_by_kept"] == {"model, lowered by rule": 1}
    assert s["critic_vs_rule_differ_share"] == 0.5 and len(s["differ_examples"]) == 2
