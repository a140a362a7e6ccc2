"""Reference log-probs for DPO pairs, computed once per pair as the pair enters the buffer.

The frozen reference model lives in this one actor, not in the learners: a DPO step
then holds no second model and runs no reference forward pass. The buffer calls
`enrich` (duck-typed) on each batch of new pairs before consumers can see them.
"""

from __future__ import annotations

import torch

from core.records import Pair
from learners.batching import collate, encode, pad_id
from learners.losses import sequence_logps


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
            b = {k: v.to(self.model.device) for k, v in collate(enc, pad_id(self.tokenizer)).items()}
            logits = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            lp, _ = sequence_logps(logits, b["labels"])
            out.extend(lp.tolist())
        return out

    def enrich(self, pairs: list[Pair]) -> list[Pair]:
        if not pairs:
            return pairs
        msgs = [p.messages for p in pairs]
        chosen = self.logps(msgs, [p.chosen for p in pairs])
        rejected = self.logps(msgs, [p.rejected for p in pairs])
        for p, c, r in zip(pairs, chosen, rejected):
            p.ref_chosen_logp, p.ref_rejected_logp = c, r
        return pairs

    def ping(self) -> bool:
        return True
