"""Runs inside vLLM's worker processes (`worker_extension_cls`): an in-place weight swap
that also re-packs the embedding-backed LM head.

On the CPU build, a tied LM head computes logits through a oneDNN plan that holds its own
packed copy of the embedding matrix. `reload_weights` loads the new embedding into the shared
parameter but never rebuilds that plan (the head itself has no weights in the checkpoint), so
without this the logits keep the embedding of the model the engine started with: fine-tuning's
output side is silently dropped, and two fine-tuned judges swapped into one engine write
nonsense (bench/checks/judge_weight_swap.py). On a GPU the rebuild is a no-op.
"""

from __future__ import annotations


class WeightSwapExtension:
    def reload_and_repack(self, weights_path: str) -> int:
        """Reload every weight from `weights_path`, then rebuild each embedding-backed layer's
        matmul plan from its (now updated) weight; returns how many layers were rebuilt."""
        from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

        self.reload_weights(weights_path=weights_path)
        layers = [m for m in self.model_runner.get_model().modules()
                  if isinstance(getattr(m, "quant_method", None), UnquantizedEmbeddingMethod)]
        for m in layers:
            m.quant_method.process_weights_after_loading(m)
        return len(layers)
