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


# ------------------------------------------- memory-safe log-probs against the simple formula


def _simple_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula the chunked code must equal: a full-vocabulary fp32 log_softmax."""
    mask = labels != IGNORE
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1), mask.sum(-1)


def _random_labels(shape, vocab: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, vocab, shape, generator=gen)
    prompt = torch.randint(0, shape[1], (shape[0],), generator=gen)
    return labels.masked_fill(torch.arange(shape[1]) < prompt[:, None], IGNORE)  # masked prompt of each row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_elements", [1 << 26, 3 * 97])  # one chunk; 3 rows per chunk
def test_chunked_logps_and_gradients_equal_the_simple_formula(dtype, chunk_elements, monkeypatch):
    import learners.losses as L

    monkeypatch.setattr(L, "CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(chunk_elements)
    base = (torch.randn(3, 7, 97, generator=gen) * 4).to(dtype)
    labels = _random_labels((3, 7), 97, gen)
    weights = torch.randn(3, generator=gen)
    grads = []
    for fn in (sequence_logps, _simple_logps):
        logits = base.clone().requires_grad_(True)
        lp, n = fn(logits, labels)
        (lp * weights).sum().backward()
        grads.append((lp.detach(), n, logits.grad.float()))
    (lp_new, n_new, g_new), (lp_ref, n_ref, g_ref) = grads
    assert torch.equal(n_new, n_ref)
    assert torch.allclose(lp_new, lp_ref, rtol=1e-5, atol=1e-4)
    tol = 1e-6 if dtype == torch.float32 else 1e-2  # bf16 gradients are rounded to bf16
    assert torch.allclose(g_new, g_ref, rtol=tol, atol=tol)


def _tiny_lm(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).to(dtype)


def _encoded(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Prompt/response rows of different lengths, prompt targets masked (as batching.encode makes them)."""
    r = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p, k = int(torch.randint(2, 12, (1,), generator=r)), int(torch.randint(1, 6, (1,), generator=r))
        ids = torch.randint(3, 61, (p + k,), generator=r).tolist()
        out.append((ids[:-1], [IGNORE] * (p - 1) + ids[p:]))
    return out


def _simple_batch_logps(model, encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row alone, unpadded, with every position's logits: the plain formula."""
    lps, ns = [], []
    for ids, labels in encoded:
        logits = model(input_ids=torch.tensor([ids])).logits
        lp, n = _simple_logps(logits, torch.tensor([labels]))
        lps.append(lp)
        ns.append(n)
    return torch.cat(lps), torch.cat(ns)


def test_response_logps_on_a_left_padded_batch_equal_each_row_alone():
    from learners.losses import response_logps

    model = _tiny_lm()
    enc = _encoded(6, seed=1)
    batch = collate(enc, pad_id=0)
    assert batch["logits_to_keep"] < batch["input_ids"].shape[1]  # the head skips prompt-only columns
    lp, n = response_logps(model, batch)
    lp_ref, n_ref = _simple_batch_logps(model, enc)
    assert torch.equal(n, n_ref)
    assert torch.allclose(lp, lp_ref, rtol=1e-5, atol=1e-4)


def test_sft_loss_and_its_gradients_through_response_logps_equal_the_simple_formula():
    from learners.losses import response_logps

    enc = _encoded(5, seed=2)
    grads = []
    for simple in (False, True):
        model = _tiny_lm()
        if simple:
            lp, n = _simple_batch_logps(model, enc)
        else:
            lp, n = response_logps(model, collate(enc, pad_id=0))
        loss = -lp.sum() / n.sum()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_new, g_new), (loss_ref, g_ref) = grads
    assert loss_new.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_new, g_ref))


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_dpo_with_nll_through_response_logps_equals_the_simple_formula(lam):
    from learners.losses import response_logps

    enc = _encoded(8, seed=3)  # rows 0-3 chosen, 4-7 rejected
    ref = torch.randn(8)
    out = []
    for simple in (False, True):
        model = _tiny_lm()
        lp, n = _simple_batch_logps(model, enc) if simple else response_logps(model, collate(enc, pad_id=0))
        res = dpo_loss(lp[:4], lp[4:], ref[:4], ref[4:], beta=0.5, chosen_nll=-lp[:4] / n[:4], nll_coef=lam)
        res["loss"].backward()
        out.append((res["loss"].detach(), model.model.embed_tokens.weight.grad.clone()))
    assert out[0][0].item() == pytest.approx(out[1][0].item(), rel=1e-5)
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-4, atol=1e-6)


def test_dpo_normalizer_divides_the_per_pair_sum():
    args = [torch.tensor(x) for x in (PC, PR, RC, RR)]
    nll = torch.tensor([0.7, 1.3])
    mean = dpo_loss(*args, beta=1.0, chosen_nll=nll, nll_coef=1.0)["loss"]
    over_five = dpo_loss(*args, beta=1.0, chosen_nll=nll, nll_coef=1.0, normalizer=5)["loss"]
    assert over_five.item() == pytest.approx(mean.item() * 2 / 5, rel=1e-6)


def _with_shared_prompts(enc, pairs_of: list[int]) -> list[tuple[list[int], list[int]]]:
    """Rows whose prompt is copied from row pairs_of[i] (same prompt, own response)."""
    out = []
    for (ids, labels), src in zip(enc, pairs_of):
        p_ids, p_labels = enc[src]
        p = next(t for t, y in enumerate(p_labels) if y != IGNORE) + 1
        q = next(t for t, y in enumerate(labels) if y != IGNORE) + 1
        out.append((p_ids[:p] + ids[q:], p_labels[:p - 1] + labels[q - 1:]))
    return out


def _assert_same_as_simple(enc, batch, *, dpo: bool, lam: float = 1.0):
    """logps, loss and every gradient of the collated batch against each row alone."""
    from learners.losses import response_logps

    out = []
    half, ref = len(enc) // 2, torch.randn(len(enc))
    for simple in (False, True):
        model = _tiny_lm()
        lp, n = _simple_batch_logps(model, enc) if simple else response_logps(model, batch)
        if dpo:
            loss = dpo_loss(lp[:half], lp[half:], ref[:half], ref[half:], beta=0.5, chosen_nll=-lp[:half] / n[:half],
                            nll_coef=lam)["loss"]
        else:
            loss = -lp.sum() / n.sum()
        loss.backward()
        out.append((lp.detach(), n, loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (lp_a, n_a, loss_a, g_a), (lp_b, n_b, loss_b, g_b) = out
    assert torch.equal(n_a, n_b)
    assert torch.allclose(lp_a, lp_b, rtol=1e-5, atol=1e-4)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_a, g_b))


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_dpo_on_shared_prompts_equals_the_simple_formula(lam):
    from learners.batching import collate_shared

    # 4 pairs: rows 0-3 chosen, 4-7 rejected with the same prompts; pairs 2 and 3 also share one
    enc = _with_shared_prompts(_encoded(8, seed=4), [0, 1, 2, 2, 0, 1, 2, 2])
    enc[5] = (enc[5][0][: len(enc[5][0]) - sum(y != IGNORE for y in enc[5][1]) + 1],
              enc[5][1][: len(enc[5][1]) - sum(y != IGNORE for y in enc[5][1]) + 1])  # a one-token response
    batch = collate_shared(enc, pad_id=0)
    assert batch["prompt_ids"].shape[0] == 3  # each distinct prompt runs once
    _assert_same_as_simple(enc, batch, dpo=True, lam=lam)


def test_both_layouts_count_every_response_token():
    from learners.batching import collate, collate_shared, n_targets

    enc = _with_shared_prompts(_encoded(4, seed=5), [0, 0, 2, 3])
    want = sum(sum(y != IGNORE for y in labels) for _, labels in enc)
    assert n_targets(collate(enc, 0)) == n_targets(collate_shared(enc, 0)) == want


def _with_prefix(enc, prefix: list[int]) -> list[tuple[list[int], list[int]]]:
    """The same rows with one token prefix before every prompt (like a shared system turn)."""
    return [(prefix + ids, [IGNORE] * len(prefix) + labels) for ids, labels in enc]


@pytest.mark.parametrize("prompts,want", [
    ([[1, 2, 3], [1, 2, 4]], 2),
    ([[1, 2, 3], [1, 2, 3, 4]], 2),  # one prompt is the other's start: each keeps its last token
    ([[1, 2, 3]], 2),  # a single prompt: all but its last token
    ([[5, 2], [1, 2]], 0),
    ([[7], [7]], 0),
    ([[1, 2, 3, 9], [1, 2, 3, 8], [1, 5, 3, 9]], 1),
])
def test_common_prefix_leaves_every_prompt_its_last_token(prompts, want):
    from learners.batching import common_prefix

    assert common_prefix(prompts) == want


def test_sft_on_prompts_with_a_common_prefix_runs_it_once_and_equals_the_simple_formula():
    from learners.batching import collate_best

    enc = _with_prefix(_encoded(6, seed=6), [9, 8, 7, 6, 5, 4, 3, 2, 9, 8, 7, 6])
    batch = collate_best(enc, pad_id=0)
    assert batch["prefix_ids"].tolist() == [[9, 8, 7, 6, 5, 4, 3, 2, 9, 8, 7, 6]]
    assert batch["prompt_ids"].shape[0] == 6  # no prompt repeats: each rest runs once
    _assert_same_as_simple(enc, batch, dpo=False)


def test_dpo_with_a_common_prefix_and_shared_prompts_equals_the_simple_formula():
    from learners.batching import collate_shared

    enc = _with_prefix(_with_shared_prompts(_encoded(8, seed=7), [0, 1, 2, 2, 0, 1, 2, 2]), [4, 4, 5, 5, 6])
    batch = collate_shared(enc, pad_id=0)
    assert batch["prefix_ids"].shape[1] >= 5 and batch["prompt_ids"].shape[0] == 3
    _assert_same_as_simple(enc, batch, dpo=True)


def test_collate_best_counts_the_cells_of_each_layout():
    from learners.batching import SHARED_CELL_COST, collate_best, layout_cells, split_prompt

    for enc in (_encoded(5, seed=8), _with_prefix(_encoded(5, seed=8), list(range(3, 30)))):
        split = [split_prompt(i, y) for i, y in enc]
        one_pass, shared = layout_cells(enc)
        assert one_pass == len(enc) * max(len(i) for i, _ in enc)
        prompts = [p for p, _, _ in split]
        k = 0
        while k < min(map(len, prompts)) - 1 and len({p[k] for p in prompts}) == 1:
            k += 1
        assert shared == k + len(prompts) * max(len(p) - k for p in prompts) + len(enc) * max(len(r) for _, r, _ in split)
        assert ("prompt_ids" in collate_best(enc, 0)) == (shared * SHARED_CELL_COST < one_pass)


def test_sequence_tokens_count_every_position_once_per_sequence_in_both_layouts():
    from learners.batching import collate, collate_shared
    from learners.trainer import sequence_tokens

    enc = _with_prefix(_with_shared_prompts(_encoded(6, seed=9), [0, 0, 2, 3, 3, 5]), [7, 7, 8])
    want = sum(len(ids) for ids, _ in enc)
    assert sequence_tokens(collate(enc, 0)) == sequence_tokens(collate_shared(enc, 0)) == want
    assert sequence_tokens(None) == 0
