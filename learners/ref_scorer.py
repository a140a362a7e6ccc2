"""Reference log-probs for DPO pairs, computed once per pair as the pair enters the buffer.

The frozen reference model lives in this one actor, not in the learners: a DPO step
then holds no second model and runs no reference forward pass. The buffer calls
`enrich` (duck-typed) on each batch of new pairs before consumers can see them.
"""

from __future__ import annotations

import torch

from core.records import Pair
from learners.batching import collate_best, encode, pad_id, to_device
from learners.losses import response_logps


class ReferenceScorer:
    def __init__(self, model_path: str, max_len: int = 384, dtype: str = "auto", batch_size: int = 8,
                 device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.hardware import resolve_dtype

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=getattr(torch, resolve_dtype(dtype))).to(device).eval()
        self.model.requires_grad_(False)
        self.max_len = max_len
        self.batch_size = batch_size

    @torch.no_grad()
    def logps(self, messages: list[list[dict]], responses: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(responses), self.batch_size):
            enc = [encode(self.tokenizer, m, r, self.max_len)
                   for m, r in zip(messages[i:i + self.batch_size], responses[i:i + self.batch_size])]
            lp, _ = response_logps(self.model, to_device(collate_best(enc, pad_id(self.tokenizer)), self.model.device))
            out.extend(lp.tolist())
        return out

    def enrich(self, pairs: list[Pair]) -> list[Pair]:
        if not pairs:
            return pairs
        # chosen and rejected side by side, so a batch runs each pair's prompt once
        msgs = [p.messages for p in pairs for _ in (0, 1)]
        lps = self.logps(msgs, [r for p in pairs for r in (p.chosen, p.rejected)])
        for p, c, r in zip(pairs, lps[0::2], lps[1::2]):
            p.ref_chosen_logp, p.ref_rejected_logp = c, r
        return pairs

    def ping(self) -> bool:
        return True
