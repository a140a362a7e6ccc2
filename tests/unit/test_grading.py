"""Pure grading decisions: judge parsing, rule grades, grade combination, RFT keep, DPO pairs."""

from __future__ import annotations

import pytest

from core.answers import AnswerCheck
from core.grading import build_dpo_pairs, combine_grades, parse_judge_output, rule_grade, select_for_rft
from core.records import Grade, GradedSample, Problem, Sample

PROBLEM = Problem("p1", "Tom has 3 + 4 apples. How many?", "3 + 4 = 7", "7", "level1", "generated")
MESSAGES = [{"role": "user", "content": PROBLEM.question}]


def gs(idx: int, score: float | None, response: str | None = None, finish: str = "stop") -> GradedSample:
    """A graded sample; by default every response has its own arithmetic (distinct reasoning)."""
    text = response if response is not None else f"Try {idx}: {idx} + 0 = {idx}, then 3 + 4 = 7. The answer is 7."
    verdict = "unknown" if score is None else ("correct" if score >= 6 else "incorrect")
    return GradedSample(Sample(PROBLEM, idx, text, finish_reason=finish), Grade(score, verdict, grader="rule"))


# ------------------------------------------------------------------ parse_judge_output

JUDGE_CASES = [
    ("Score: 9", 9.0),
    ("score: 7/10", 7.0),
    ("Score: 8/ 10", 8.0),
    ("**Score:** 3", 3.0),
    ("**Score**: 3", 3.0),
    ("Score: **8**", 8.0),
    ("SCORE: 2", 2.0),
    ("Score = 6", 6.0),
    ("Score：8", 8.0),  # fullwidth (Chinese) colon
    ("Score: 7.5", 7.5),
    ("Score: 10/10", 10.0),
    ("Score: 1", 1.0),
    ("Score: 10", 10.0),
    ("Score: 8 out of 10", 8.0),
    ("Score:9.", 9.0),
    ("The final answer 7 matches the reference 7.\nScore: 9\n", 9.0),
    ("Score: 3\nOn reflection the answer is right.\nScore: 8", 8.0),  # the last score wins
    ("Score: 2 ... Score: 11 ... Score: 7", 7.0),
    ("分析：答案正确。\nScore: 9", 9.0),
    ("x" * 10_000 + "\nScore: 4", 4.0),
    ("Score: 6\nScore: 1e3", 6.0),  # "1e3" is not a score; the last real one counts
    # ungraded
    ("The answer looks fine to me.", None),
    ("Score: 11", None),
    ("Score: 0", None),
    ("Score: -2", None),
    ("Score: 5/5", None),  # another scale
    ("Score: 1e3", None),
    ("underscore: 4", None),
    ("Score: nine", None),
    ("Scores: 9", None),
    ("", None),
    ("   \n ", None),
    (None, None),
]


@pytest.mark.parametrize("text,score", JUDGE_CASES, ids=[repr(t)[:40] for t, _ in JUDGE_CASES])
def test_parse_judge_output(text, score):
    g = parse_judge_output(text, threshold=6.0)
    assert g.score == score
    assert g.grader == "model"
    assert g.reason
    if score is None:
        assert g.verdict == "unknown"
    else:
        assert g.verdict == ("correct" if score >= 6.0 else "incorrect")


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), (None, "empty"), ("no score", "no 'Score: N'"), ("Score: 11", "outside 1..10"),
    ("Score: 0", "outside 1..10"), ("Score: 4/5", "scale"),
])
def test_parse_judge_output_reasons(text, reason):
    assert reason in parse_judge_output(text).reason


def test_parse_judge_output_threshold_and_analysis():
    assert parse_judge_output("Score: 6", threshold=7).verdict == "incorrect"
    assert parse_judge_output("Score: 7", threshold=7).verdict == "correct"
    g = parse_judge_output("The response adds wrongly.\nScore: 2")
    assert g.analysis == "The response adds wrongly."


# ------------------------------------------------------------------ rule_grade


def test_rule_grade_bands():
    right = rule_grade(AnswerCheck("correct", "exact match", "7"))
    wrong = rule_grade(AnswerCheck("incorrect", "math-verify", "8"))
    none = rule_grade(AnswerCheck("unparseable", "no answer found", ""))
    assert right.verdict == "correct" and 9 <= right.score <= 10 and "'7'" in right.analysis
    assert wrong.verdict == "incorrect" and 1 <= wrong.score <= 2
    assert none.score is None and none.verdict == "unknown" and none.reason == "no answer found"
    assert {right.grader, wrong.grader, none.grader} == {"rule"}


# ------------------------------------------------------------------ combine_grades

RULE_OK = Grade(9.0, "correct", "", "rule", "exact match")
RULE_BAD = Grade(2.0, "incorrect", "", "rule", "math-verify")
RULE_NONE = Grade(None, "unknown", "", "rule", "no answer found")
MODEL_OK = Grade(8.0, "correct", "looks right", "model", "judge score")
MODEL_BAD = Grade(3.0, "incorrect", "wrong", "model", "judge score")
MODEL_NONE = Grade(None, "unknown", "", "model", "no 'Score: N' line")


@pytest.mark.parametrize(
    "policy,rule,model,has_ref,expect",
    [
        ("rule", RULE_OK, MODEL_BAD, True, RULE_OK),
        ("rule", RULE_NONE, MODEL_OK, True, RULE_NONE),
        ("model", RULE_OK, MODEL_BAD, True, MODEL_BAD),
        ("model", RULE_OK, MODEL_NONE, True, MODEL_NONE),
        ("rule_else_model", RULE_BAD, MODEL_OK, True, RULE_BAD),
        ("rule_else_model", RULE_NONE, MODEL_OK, True, MODEL_OK),
        ("rule_else_model", None, MODEL_BAD, True, MODEL_BAD),
        ("rule_else_model", RULE_OK, MODEL_BAD, False, MODEL_BAD),  # no reference: the judge decides
        ("rule_else_model", RULE_OK, None, False, RULE_OK),
        ("rule_else_model", RULE_NONE, None, True, RULE_NONE),
        ("both", None, MODEL_OK, False, MODEL_OK),
        ("both", RULE_NONE, MODEL_BAD, True, MODEL_BAD),
    ],
)
def test_combine_grades_passthrough(policy, rule, model, has_ref, expect):
    assert combine_grades(policy, rule, model, has_ref) == expect


@pytest.mark.parametrize("policy", ["rule", "model", "rule_else_model", "both"])
def test_combine_grades_nothing_ran(policy):
    g = combine_grades(policy, None, None, True)
    assert g.score is None and g.verdict == "unknown" and g.reason


def test_combine_both_agree_averages():
    g = combine_grades("both", RULE_OK, MODEL_OK, True)
    assert g.score == pytest.approx((RULE_OK.score + MODEL_OK.score) / 2)
    assert g.verdict == "correct" and g.agreement is True and g.grader == "rule+model"
    assert "exact match" in g.reason and "judge score" in g.reason
    assert g.analysis == MODEL_OK.analysis


def test_combine_both_disagree_keeps_rule():
    g = combine_grades("both", RULE_OK, MODEL_BAD, True)
    assert (g.score, g.verdict, g.agreement) == (RULE_OK.score, "correct", False)
    g = combine_grades("both", RULE_BAD, MODEL_OK, True)
    assert (g.score, g.verdict, g.agreement) == (RULE_BAD.score, "incorrect", False)


@pytest.mark.parametrize("model", [None, MODEL_NONE])
def test_combine_both_model_ungraded(model):
    g = combine_grades("both", RULE_BAD, model, True)
    assert (g.score, g.verdict, g.grader) == (RULE_BAD.score, "incorrect", "rule")
    assert "model ungraded" in g.reason and g.agreement is None


def test_combine_unknown_policy():
    with pytest.raises(ValueError, match="majority"):
        combine_grades("majority", RULE_OK, MODEL_OK, True)


# ------------------------------------------------------------------ select_for_rft


def _check_all_decided(group):
    for g in group:
        assert g.kept in (True, False), g
        assert g.keep_reason, g


def test_select_threshold():
    group = [gs(0, 9), gs(1, 7), gs(2, 6.9), gs(3, None), gs(4, 2)]
    out = select_for_rft(group, threshold=7, max_kept=10)
    assert out is group
    _check_all_decided(group)
    assert [g.kept for g in group] == [True, True, False, False, False]
    assert "6.9 < 7" in group[2].keep_reason
    assert group[3].keep_reason.startswith("ungraded")
    assert ">= 7" in group[0].keep_reason


def test_select_rejects_truncated():
    group = [gs(0, 10, finish="length"), gs(1, 8)]
    select_for_rft(group, threshold=7, max_kept=4)
    _check_all_decided(group)
    assert group[0].kept is False and "truncated" in group[0].keep_reason
    assert group[1].kept is True


def test_select_dedupes_same_reasoning():
    same_a = "3 + 4 = 7. The answer is 7."
    same_b = "We add: 3 + 4 = 7, so the answer is 7."  # other words, same arithmetic
    group = [gs(0, 8, same_a), gs(1, 9, same_b), gs(2, 8, "4 + 3 = 7. The answer is 7.")]
    select_for_rft(group, threshold=7, max_kept=4)
    _check_all_decided(group)
    assert group[1].kept is True  # the better-scored of the duplicates
    assert group[0].kept is False and "duplicate reasoning" in group[0].keep_reason
    assert group[2].kept is True  # different order of operands is different arithmetic


def test_select_dedupes_texts_without_numbers():
    group = [gs(0, 9, "Adding them gives seven."), gs(1, 9, "  adding THEM gives   seven. ")]
    select_for_rft(group, threshold=7, max_kept=4)
    assert [g.kept for g in group] == [True, False]


def test_select_prefers_distinct_final_answers():
    group = [
        gs(0, 10, "3 + 4 = 7. \\boxed{7}"),
        gs(1, 9, "4 + 3 = 7. \\boxed{7}"),  # second-best score, same final answer as 0
        gs(2, 8, "8 - 0 = 8. \\boxed{8}"),  # lower score but a distinct final answer
    ]
    select_for_rft(group, threshold=7, max_kept=2)
    _check_all_decided(group)
    assert [g.kept for g in group] == [True, False, True]
    assert "max_kept" in group[1].keep_reason


def test_select_max_kept_takes_best_scores():
    group = [gs(i, s) for i, s in enumerate([7, 10, 8, 9, 7.5])]
    select_for_rft(group, threshold=7, max_kept=3)
    _check_all_decided(group)
    kept = sorted(g.grade.score for g in group if g.kept)
    assert kept == [8, 9, 10]
    assert sum(g.kept for g in group) == 3
    assert all("max_kept" in g.keep_reason for g in group if not g.kept)


def test_select_ties_break_by_sample_index():
    group = [gs(3, 9), gs(1, 9), gs(2, 9)]
    select_for_rft(group, threshold=7, max_kept=1)
    assert [g.sample.sample_index for g in group if g.kept] == [1]


def test_select_all_rejected_and_empty_group():
    group = [gs(0, None), gs(1, 3), gs(2, 10, finish="length")]
    select_for_rft(group, threshold=7, max_kept=2)
    _check_all_decided(group)
    assert not any(g.kept for g in group)
    assert select_for_rft([], 7, 2) == []


# ------------------------------------------------------------------ build_dpo_pairs


def _pairs(group, min_gap=3.0, max_pairs=2):
    pairs = build_dpo_pairs(group, MESSAGES, min_gap, max_pairs)
    keys = [k for p in pairs for k in (p.chosen_key, p.rejected_key)]
    assert len(keys) == len(set(keys)), "a response is used in two pairs"
    by_key = {g.key: g for g in group}
    for p in pairs:
        c, r = by_key[p.chosen_key], by_key[p.rejected_key]
        assert (p.chosen, p.rejected) == (c.sample.response, r.sample.response)
        assert (p.chosen_score, p.rejected_score) == (c.grade.score, r.grade.score)
        assert p.chosen_score - p.rejected_score >= min_gap and p.chosen_score > p.rejected_score
        assert p.chosen.strip() != p.rejected.strip()
        assert p.messages == MESSAGES and p.problem == PROBLEM
    return pairs


def test_dpo_min_gap():
    pairs = _pairs([gs(0, 9), gs(1, 8), gs(2, 6), gs(3, 2)], min_gap=3, max_pairs=4)
    assert [(p.chosen_score, p.rejected_score) for p in pairs] == [(9, 2)]  # 8 vs 6 is too close


def test_dpo_gap_equal_to_min_gap_is_enough():
    pairs = _pairs([gs(0, 5), gs(1, 2)], min_gap=3)
    assert len(pairs) == 1


def test_dpo_max_pairs_and_extremes_first():
    group = [gs(0, 10), gs(1, 9), gs(2, 9), gs(3, 2), gs(4, 1), gs(5, 1)]
    pairs = _pairs(group, min_gap=3, max_pairs=2)
    assert len(pairs) == 2
    assert (pairs[0].chosen_key, pairs[0].rejected_key) == (group[0].key, group[4].key)
    assert pairs[1].chosen_score == 9 and pairs[1].rejected_score == 1
    assert len(_pairs(group, min_gap=3, max_pairs=10)) == 3


def test_dpo_each_response_used_once():
    group = [gs(0, 10), gs(1, 10), gs(2, 10), gs(3, 1)]
    pairs = _pairs(group, min_gap=3, max_pairs=5)
    assert len(pairs) == 1  # only one low response to pair against


def test_dpo_no_pair_between_identical_texts():
    same = "3 + 4 = 8. The answer is 8."
    group = [gs(0, 9, same), gs(1, 1, "  " + same + "\n"), gs(2, 2, "3 + 4 = 9. The answer is 9.")]
    pairs = _pairs(group, min_gap=3)
    assert [(p.chosen_key, p.rejected_key) for p in pairs] == [(group[0].key, group[2].key)]


def test_dpo_ignores_ungraded_and_truncated_chosen():
    group = [gs(0, None), gs(1, 10, finish="length"), gs(2, 8), gs(3, None), gs(4, 2)]
    pairs = _pairs(group, min_gap=3, max_pairs=3)
    assert [(p.chosen_key, p.rejected_key) for p in pairs] == [(group[2].key, group[4].key)]


def test_dpo_equal_scores_are_never_a_pair():
    # min_gap=0 is a valid config value; a pair still needs a preference
    group = [gs(0, 7), gs(1, 7), gs(2, 7)]
    assert _pairs(group, min_gap=0, max_pairs=3) == []
    pairs = _pairs([gs(0, 7), gs(1, 7), gs(2, 6)], min_gap=0, max_pairs=3)
    assert len(pairs) == 1 and pairs[0].rejected_score == 6


def test_dpo_nothing_to_pair():
    assert _pairs([gs(0, 9), gs(1, 8)], min_gap=3) == []
    assert _pairs([gs(0, None), gs(1, None)], min_gap=0) == []
    assert _pairs([], min_gap=3) == []


# ------------------------------------------------------------------ distinct answers, rule cap


@pytest.mark.parametrize("a,b,same", [("7", "7.0", True), ("7", "7 dollars", True), ("$7", "7", True),
                                      ("1,000", "1000", True), ("7", "8", False), ("1/2", "0.5", True),
                                      ("x+1", "x+1", True), ("x+1", "x+2", False)])
def test_canonical_answer_is_the_checkers_normalisation(a, b, same):
    from core.grading import canonical_answer

    assert (canonical_answer(a) == canonical_answer(b)) is same


def test_select_treats_normalised_equal_answers_as_one():
    group = [gs(0, 10, "3 + 4 = 7. The answer is 7."), gs(1, 9, "4 + 3 = 7. The answer is 7.0."),
             gs(2, 8, "7 + 0 = 7. The answer is 7 dollars."), gs(3, 7.5, "8 + 0 = 8. The answer is 8.")]
    select_for_rft(group, threshold=7, max_kept=2)
    assert [g.kept for g in group] == [True, False, False, True]  # 7, 7.0 and 7 dollars are one answer


def _capped(model_score, rule_verdict, threshold=7.0):
    from core.grading import combine_grades

    model = None if model_score is None else parse_judge_output(f"Fine.\nScore: {model_score}", threshold)
    rule = None if rule_verdict is None else Grade(
        None if rule_verdict == "unknown" else (9.0 if rule_verdict == "correct" else 2.0), rule_verdict,
        grader="rule", reason="math-verify")
    return combine_grades("model_rule_cap", rule, model, rule is not None)


@pytest.mark.parametrize("model_score,rule,score,verdict,grader", [
    (9, "correct", 9, "correct", "model"),
    (5, "correct", 5, "incorrect", "model"),  # flawed work: the critic may score a right answer low
    (9, "incorrect", 4, "incorrect", "model, lowered by rule"),  # the rule may only lower
    (3, "incorrect", 3, "incorrect", "model"),
    (10, None, 10, "correct", "model"),  # no checkable answer: the critic alone
    (2, "unknown", 2, "incorrect", "model"),  # rule undecided: the critic alone
    (None, "correct", 9, "correct", "rule (judge ungraded)"),
    (None, "incorrect", 4, "incorrect", "rule"),  # not asked: graded at the cap the rule sets
    (None, None, None, "unknown", "none"),
])
def test_model_rule_cap_policy(model_score, rule, score, verdict, grader):
    g = _capped(model_score, rule)
    assert g.score == score and g.verdict == verdict and g.grader == grader
    assert g.rule_verdict == ("" if rule in (None, "unknown") else rule)
    if model_score is not None:
        assert g.model_score == model_score


@pytest.mark.parametrize("policy", ["rule", "model", "rule_else_model", "both", "model_rule_cap"])
@pytest.mark.parametrize("audit", [True, False])
def test_judge_reads_only_what_it_can_decide(policy, audit):
    from core.grading import judge_needed

    def rule(verdict):
        return None if verdict is None else Grade(None if verdict == "unknown" else 9.0, verdict, grader="rule")

    verdicts = [None, "unknown", "correct", "incorrect"]
    got = judge_needed(policy, [rule(v) for v in verdicts], audit)
    expect = {"rule": [], "model": [0, 1, 2, 3], "both": [0, 1, 2, 3], "rule_else_model": [0, 1],
              "model_rule_cap": [0, 1, 2, 3] if audit else [0, 1, 2]}[policy]
    assert got == expect


def test_rule_incorrect_is_never_kept_nor_chosen_whatever_the_threshold():
    def capped(i, model_score, rule):
        g = _capped(model_score, rule)
        return GradedSample(Sample(PROBLEM, i, f"Try {i}: {i} + 1 = {i + 1}. The answer is {i + 1}."), g)

    group = [capped(0, 10, "incorrect"), capped(1, 6, "correct"), capped(2, 1, "correct")]
    select_for_rft(group, threshold=3, max_kept=4)  # a threshold below the cap
    assert [g.kept for g in group] == [False, True, False]
    assert group[0].keep_reason == "rule check: final answer wrong"
    pairs = build_dpo_pairs(group, MESSAGES, min_gap=1, max_pairs=4)
    assert [(p.chosen_key, p.rejected_key) for p in pairs] == [("p1#1", "p1#2")]  # #0 (top critic score) never chosen


# ------------------------------------------------------------------ critic bootstrap targets


def _critique(group, **kw):
    from core.grading import critique_policy

    annotated, out = critique_policy(group, **kw)
    _check_all_decided(annotated)
    return annotated, out


def _score(x) -> int:
    return int(x.response.rsplit("Score: ", 1)[1])


def test_critique_targets_are_true_bands_of_the_work_plus_reference():
    group = [gs(0, 9.0, "So 3 + 4 = 7. The answer is 7."), gs(1, 2.0, "3 + 4 = 8. The answer is 8."),
             gs(2, 9.0, "3 + 4 = 6. The answer is 7.")]
    annotated, out = _critique(group, heldout=frozenset(), hard_negatives=False)
    assert [_score(x) for x in out] == [10, 4, 5, 10]
    assert "Step 3 + 4 = 8; reference 3 + 4 = 7; wrong, 3 + 4 is 7." in out[1].response  # the first wrong step
    assert "Step 3 + 4 = 6; reference 3 + 4 = 7; wrong" in out[2].response and "they match" in out[2].response
    assert out[-1].key == "critique:p1#ref"
    assert annotated[2].keep_reason.startswith("critique target, band 5")
    assert "Reference solution: 3 + 4 = 7" in out[0].messages[-1]["content"]  # the judge sees the work


def test_critique_hard_negatives_are_reference_copies_in_three_bands():
    p2 = Problem("p2", PROBLEM.question, "Tom has 3 + 4 = 7 apples.\nThe answer is 7.", "7")
    right = GradedSample(Sample(p2, 0, "3 + 4 = 7. The answer is 7."), Grade(9.0, "correct"))
    _, out = _critique([right], heldout=frozenset())
    by = {x.key.split("#", 1)[1]: x for x in out if "#" in x.key and not x.key.endswith("#0")}
    # a false step behind the answer (5) in the reference, in its rewording and in the right sampled response
    assert {k: _score(v) for k, v in by.items()} == {"ref": 10, "reworded": 10, "flawed-ref": 5, "slip-ref": 4,
                                                     "wrong-ref": 3, "flawed-reworded": 5, "0#flawed": 5}
    flawed = by["0#flawed"].messages[-1]["content"].split("Response: ")[1]
    assert "3 + 4 = 7" not in flawed and flawed.endswith("The answer is 7.")
    from core.prompts import replace_final_answer, wrong_final_answer

    out = wrong_final_answer("17 + 7 = 7.5 or 7. The answer is 7.", "7", "s")
    w = out.split()[-1].rstrip(".")
    assert w != "7" and out == f"17 + 7 = 7.5 or 7. The answer is {w}."
    assert replace_final_answer("17 + 7 = 7.5 or 7.", "7", "9") == "17 + 9 = 7.5 or 9."
    assert replace_final_answer("x", "7", "9") is None and replace_final_answer("7", "seven", "9") is None
    assert wrong_final_answer("x = 1/2", "1/2", "s") is None


def test_critique_balance_repeats_the_reference_until_classes_are_equal():
    group = [gs(i, 2.0, f"{i} + 4 = {i + 4}. The answer is {i + 4}.") for i in range(4)] + [gs(4, 9.0)]
    _, out = _critique(group, heldout=frozenset(), balance=True)
    passing = sum(_score(x) >= 7 for x in out)
    assert passing == len(out) - passing
    assert len({x.key for x in out}) == len(out)  # copies get their own keys


def test_critique_counterfactual_answer_is_labelled_afresh():
    right = gs(0, 9.0, "3 + 4 = 7. So Tom has 7 apples. The answer is 7.")
    wrong = gs(1, 2.0, "3 + 4 = 8. So Tom has 8 apples, not 17. The answer is 8.")
    blank = gs(2, 2.0, "I am not sure.")
    _, out = _critique([right, wrong, blank], heldout=frozenset(), hard_negatives=False, counterfactual=True)
    by_key = {x.key: x for x in out}
    assert set(by_key) == {"critique:p1#0", "critique:p1#0#cf", "critique:p1#1", "critique:p1#1#cf",
                           "critique:p1#2", "critique:p1#ref"}  # no counterfactual without a final answer
    # a wrong response given the reference's answer: right answer, the work still false -> 5
    cf = by_key["critique:p1#1#cf"]
    assert "Response: 3 + 4 = 7. So Tom has 7 apples, not 17. The answer is 7." in cf.messages[-1]["content"]
    assert _score(cf) == 10  # every 8 became 7: the work is now true too
    # a right response with a nearby wrong number as its last answer only: steps right, answer wrong -> 3
    assert _score(by_key["critique:p1#0#cf"]) == 3
    assert _score(by_key["critique:p1#2"]) == 1  # no final answer


def test_critique_caps_wrong_answers_per_prompt():
    group = [gs(i, 2.0, f"{i} + 4 = {i + 4}. The answer is {i + 4}.") for i in range(10, 14)]
    group.append(gs(4, 9.0, "3 + 4 = 7. The answer is 7."))
    annotated, out = _critique(group, heldout=frozenset(), max_wrong=2, hard_negatives=False)
    assert [_score(x) for x in out].count(2) == 2
    capped = [g for g in annotated if g.kept is False]
    assert [g.sample.sample_index for g in capped] == [12, 13]
    assert all("max_wrong_per_prompt=2" in g.keep_reason for g in capped)


def test_critique_heldout_prompt_gives_no_training_data():
    annotated, out = _critique([gs(0, 9.0), gs(1, 2.0)], heldout=frozenset({"p1"}))
    assert out == [] and all(g.keep_reason == "held out for critic evaluation" for g in annotated)


def test_critique_undecided_rule_is_no_target():
    annotated, out = _critique([gs(0, None, "The answer is 7.")], heldout=frozenset(), hard_negatives=False)
    assert [x.key for x in out] == ["critique:p1#ref"] and "undecided" in annotated[0].keep_reason


# ------------------------------------------------------------------ calculator notes (critic.calculator_notes)


@pytest.mark.parametrize("response,note", [
    ("So 3 + 4 = 7. The answer is 7.", "Calculator: 3 + 4 = 7 true."),
    ("3 + 4 = 6. The answer is 7.", "Calculator: 3 + 4 = 6 FALSE."),  # a false step behind a right answer
    ("12 / 3 = 4 pens, then 4 x 2 = 9 pens.", "Calculator: 12 / 3 = 4 true; 4 x 2 = 9 FALSE."),
    ("The answer is 7.", "Calculator: no arithmetic statement found."),
])
def test_calculator_notes_mark_each_statement(response, note):
    from core.prompts import calculator_notes

    assert calculator_notes(response) == note


def test_calculator_notes_are_in_the_prompt_only_when_asked():
    from core.prompts import judge_messages

    plain, noted = judge_messages(PROBLEM, "3 + 4 = 6. The answer is 7."), \
        judge_messages(PROBLEM, "3 + 4 = 6. The answer is 7.", calculator=True)
    assert "Calculator" not in plain[-1]["content"]
    assert noted[-1]["content"] == plain[-1]["content"] + "\nCalculator: 3 + 4 = 6 FALSE. Answer 7 vs reference 7: match."


@pytest.mark.parametrize("response,reference,note", [
    ("The answer is 7.", "7", "Answer 7 vs reference 7: match."),
    ("The answer is 7 dollars.", "7", "Answer 7 dollars vs reference 7: match."),  # the checker's normalisation
    ("The answer is 7.0", "7", "Answer 7.0 vs reference 7: match."),
    ("3 + 4 = 7, and the answer is 8.", "7", "Answer 8 vs reference 7: differ."),  # a stated answer wins
    ("I do not know.", "7", "No final answer."),
    ("#### 1,200", "1200", "Answer 1,200 vs reference 1200: match."),
])
def test_answer_note_compares_the_rules_final_answer(response, reference, note):
    from core.prompts import answer_note

    assert answer_note(response, reference) == note


def test_calculator_notes_leave_out_the_answer_where_there_is_no_reference():
    from core.prompts import calculator_notes

    assert calculator_notes("3 + 4 = 7. The answer is 7.", "") == "Calculator: 3 + 4 = 7 true."


def test_critique_targets_carry_the_notes_everywhere_when_asked():
    """Sampled, counterfactual and reference targets alike: training prompts match judging prompts."""
    group = [gs(0, 9.0, "So 3 + 4 = 7. The answer is 7."), gs(1, 2.0, "3 + 4 = 8. The answer is 8.")]
    _, plain = _critique(group, heldout=frozenset(), counterfactual=True)
    _, noted = _critique(group, heldout=frozenset(), counterfactual=True, calculator=True)
    assert [x.key for x in noted] == [x.key for x in plain] and [x.response for x in noted] == [x.response for x in plain]
    assert all("\nCalculator: " in x.messages[-1]["content"] for x in noted)
    assert not any("Calculator" in x.messages[-1]["content"] for x in plain)
