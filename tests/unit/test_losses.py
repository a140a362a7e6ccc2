"""Losses against hand-computed values, and prompt masking of gradients."""

from __future__ import annotations

import math

import pytest
import torch

from learners.batching import collate, encode
from learners.losses import IGNORE, dpo_loss, sequence_logps, sft_loss


def _ls(x: float) -> float:  # log(sigmoid(x)) by hand
    return -math.log1p(math.exp(-x))


PC, PR, RC, RR = [-10.0, -4.0], [-12.0, -3.0], [-11.0, -4.5], [-11.5, -2.0]


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_dpo_sigmoid_matches_hand_computation_without_nll(beta):
    out = dpo_loss(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR), beta=beta)
    logits = [(pc - pr) - (rc - rr) for pc, pr, rc, rr in zip(PC, PR, RC, RR)]
    expect = sum(-_ls(beta * z) for z in logits) / 2
    assert out["loss"].item() == pytest.approx(expect, rel=1e-6)
    assert out["nll_loss"].item() == 0.0
    margins = [beta * (pc - rc) - beta * (pr - rr) for pc, pr, rc, rr in zip(PC, PR, RC, RR)]
    assert out["reward_margin"].item() == pytest.approx(sum(margins) / 2, rel=1e-6)
    assert out["pref_accuracy"].item() == sum(m > 0 for m in margins) / 2


@pytest.mark.parametrize("lam", [0.5, 1.0, 1.5])
def test_dpo_with_nll_term(lam):
    nll = torch.tensor([0.7, 1.3])
    out = dpo_loss(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR), beta=1.0,
                   chosen_nll=nll, nll_coef=lam)
    logits = [(pc - pr) - (rc - rr) for pc, pr, rc, rr in zip(PC, PR, RC, RR)]
    pref = sum(-_ls(z) for z in logits) / 2
    assert out["loss"].item() == pytest.approx(pref + lam * 1.0, rel=1e-6)
    assert out["pref_loss"].item() == pytest.approx(pref, rel=1e-6)


def test_cdpo_label_smoothing_and_ipo():
    eps, beta = 0.1, 0.5
    out = dpo_loss(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR), beta=beta,
                   label_smoothing=eps)
    logits = [(pc - pr) - (rc - rr) for pc, pr, rc, rr in zip(PC, PR, RC, RR)]
    expect = sum(-(1 - eps) * _ls(beta * z) - eps * _ls(-beta * z) for z in logits) / 2
    assert out["loss"].item() == pytest.approx(expect, rel=1e-6)
    ipo = dpo_loss(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR), beta=beta, loss_type="ipo")
    assert ipo["loss"].item() == pytest.approx(sum((z - 1 / (2 * beta)) ** 2 for z in logits) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        dpo_loss(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR), beta=1, loss_type="kto")


def test_sequence_logps_sum_only_response_tokens():
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[IGNORE, 3, 5, IGNORE]])
    lp, n = sequence_logps(logits, labels)
    logp = torch.log_softmax(logits, -1)
    assert lp.item() == pytest.approx((logp[0, 1, 3] + logp[0, 2, 5]).item(), rel=1e-5)
    assert n.item() == 2


class _Tok:
    """A stand-in tokenizer: one token per character (no model hub here)."""

    eos_token_id = 1

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return [2] + [10 + (ord(c) % 50) for c in messages[-1]["content"]] + [3]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [10 + (ord(c) % 50) for c in text]}


def test_gradients_reach_only_response_tokens():
    tok = _Tok()
    ids, labels = encode(tok, [{"role": "user", "content": "what is 2+2"}], "4", max_len=64)
    n_prompt = len(tok.apply_chat_template([{"role": "user", "content": "what is 2+2"}]))
    assert all(y == IGNORE for y in labels[: n_prompt - 1])  # targets for prompt positions are masked
    assert labels[n_prompt - 1:] == [10 + (ord("4") % 50), tok.eos_token_id]
    b = collate([(ids, labels)], pad_id=0)
    emb = torch.nn.Embedding(64, 8)
    head = torch.nn.Linear(8, 64)
    x = emb(b["input_ids"])
    x.retain_grad()
    # a causal-free model: position t's logits depend only on token t
    loss = sft_loss(head(x), b["labels"])
    loss.backward()
    per_pos = x.grad.abs().sum(-1)[0]
    assert torch.all(per_pos[: n_prompt - 1] == 0)
    assert torch.all(per_pos[n_prompt - 1:] > 0)
