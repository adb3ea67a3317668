"""How much memory a model needs once loaded, from its metadata alone.

The runtime's memory budget evicts least-recently-used models when the sum of
these estimates exceeds ``runtime.memory_budget_mb``, so the estimate must be
available before a model is loaded. It has three parts:

* **weights**: the file size (llama.cpp maps the file; every weight is touched
  on the first evaluation);
* **KV cache**: ``n_layer * n_ctx * n_head_kv * (key_length + value_length)``
  elements of f16 (2 bytes) - for the usual ``key_length = value_length =
  n_embd / n_head`` that is the textbook ``2 * n_layer * n_ctx * n_embd_kv * 2``;
* **overhead**: compute buffers and bookkeeping, ``8 MiB + 10 %`` of the weights.

Measured with llama-cpp-python 0.3.36 (growth of resident memory over loading and
one short completion): Gemma 3 270M Q4_K_M 340 MiB at ``n_ctx=2048`` and 448 MiB at
8192, against estimates of 310 and 418 MiB (the extra is the 262k-token vocabulary's
logits and compute buffers); the tiny test model 5-8 MB against 9 MB. A slow test
keeps the estimate within 20 % of the measurement (docs/MODELS.md).

Example:
    >>> est = estimate_memory(file_size=2_500_000_000, n_ctx=4096, n_layer=36, n_embd=2560,
    ...                       n_head=32, n_head_kv=8, key_length=128, value_length=128)
    >>> round(est.kv_cache_mb)
    576
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
KV_BYTES_PER_ELEMENT = 2  # f16, llama.cpp's default cache type
OVERHEAD_FIXED_MB = 8.0
OVERHEAD_FRACTION = 0.10


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's estimated resident memory in MiB, by part."""

    weights_mb: float
    kv_cache_mb: float
    overhead_mb: float
    n_ctx: int

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.kv_cache_mb + self.overhead_mb


def kv_cache_bytes(
    *,
    n_ctx: int,
    n_layer: int,
    n_head_kv: int,
    key_length: int,
    value_length: int,
    bytes_per_element: int = KV_BYTES_PER_ELEMENT,
) -> int:
    """Bytes of the K and V caches for ``n_ctx`` tokens."""
    return n_layer * n_ctx * n_head_kv * (key_length + value_length) * bytes_per_element


def estimate_memory(
    *,
    file_size: int,
    n_ctx: int,
    n_layer: int | None,
    n_embd: int | None,
    n_head: int | None,
    n_head_kv: int | None = None,
    key_length: int | None = None,
    value_length: int | None = None,
    context_length: int | None = None,
) -> MemoryEstimate:
    """Estimate the memory of a model loaded with ``n_ctx`` (capped at ``context_length``).

    Missing attention metadata (some architectures lack head counts) gives a KV
    cache of 0 rather than a guess; the weights still dominate.
    """
    if context_length:
        n_ctx = min(n_ctx, context_length)
    kv = 0
    if n_layer and n_embd and n_head:
        head_dim = n_embd // n_head
        kv = kv_cache_bytes(
            n_ctx=n_ctx,
            n_layer=n_layer,
            n_head_kv=n_head_kv or n_head,
            key_length=key_length or head_dim,
            value_length=value_length or head_dim,
        )
    weights_mb = file_size / MIB
    return MemoryEstimate(
        weights_mb=weights_mb,
        kv_cache_mb=kv / MIB,
        overhead_mb=OVERHEAD_FIXED_MB + OVERHEAD_FRACTION * weights_mb,
        n_ctx=n_ctx,
    )
