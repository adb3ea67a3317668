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

The KV cache's element size follows ``type_k``/``type_v`` (q8_0 is 34 bytes per 32
elements, q4_0 18, ...). With ``n_gpu_layers`` the estimate is split: the offloaded
share of the layers takes that share of the weights to GPU memory, with its KV cache
when ``offload_kqv`` (llama.cpp's default), and the GPU holds the compute overhead;
the rest stays in host memory (:attr:`MemoryEstimate.gpu_mb`, :attr:`MemoryEstimate.host_mb`).
The pool budgets each: ``runtime.memory_budget_mb`` and ``runtime.gpu_memory_budget_mb``.

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
#: Bytes per element of each KV cache type (``runtime.type_k``/``type_v``): ggml's block
#: size over its element count (q8_0: 34 bytes per 32 elements).
KV_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
    "iq4_nl": 18 / 32,
}
OVERHEAD_FIXED_MB = 8.0
OVERHEAD_FRACTION = 0.10


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's estimated resident memory in MiB, by part."""

    weights_mb: float
    kv_cache_mb: float
    overhead_mb: float
    n_ctx: int
    gpu_mb: float = 0.0
    """The part in GPU memory (offloaded layers' weights, their KV cache, compute buffers)."""

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.kv_cache_mb + self.overhead_mb

    @property
    def host_mb(self) -> float:
        """The part in host memory (RAM): everything not offloaded."""
        return self.total_mb - self.gpu_mb


def kv_cache_bytes(
    *,
    n_ctx: int,
    n_layer: int,
    n_head_kv: int,
    key_length: int,
    value_length: int,
    bytes_per_element: float = KV_BYTES_PER_ELEMENT,
    value_bytes_per_element: float | None = None,
) -> int:
    """Bytes of the K and V caches for ``n_ctx`` tokens (V's element size defaults to K's)."""
    v_bytes = bytes_per_element if value_bytes_per_element is None else value_bytes_per_element
    return round(n_layer * n_ctx * n_head_kv * (key_length * bytes_per_element + value_length * v_bytes))


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
    type_k: str | None = None,
    type_v: str | None = None,
    n_gpu_layers: int = 0,
    offload_kqv: bool = True,
) -> MemoryEstimate:
    """Estimate the memory of a model loaded with ``n_ctx`` (capped at ``context_length``),
    its KV cache of ``type_k``/``type_v`` (default f16), ``n_gpu_layers`` of its layers
    offloaded (-1: all; pass 0 when llama.cpp cannot offload).

    Missing attention metadata (some architectures lack head counts) gives a KV
    cache of 0 rather than a guess; the weights still dominate. Without a layer count
    an offload of any layers counts as all of them.
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
            bytes_per_element=KV_TYPE_BYTES[type_k or "f16"],
            value_bytes_per_element=KV_TYPE_BYTES[type_v or "f16"],
        )
    weights_mb = file_size / MIB
    kv_mb = kv / MIB
    overhead_mb = OVERHEAD_FIXED_MB + OVERHEAD_FRACTION * weights_mb
    share = offloaded_share(n_gpu_layers, n_layer)
    gpu_mb = share * weights_mb + (share * kv_mb if offload_kqv else 0.0) + (overhead_mb if share else 0.0)
    return MemoryEstimate(
        weights_mb=weights_mb, kv_cache_mb=kv_mb, overhead_mb=overhead_mb, n_ctx=n_ctx, gpu_mb=gpu_mb
    )


def offloaded_share(n_gpu_layers: int, n_layer: int | None) -> float:
    """The share (0..1) of a model's layers on the GPU: ``n_gpu_layers`` of ``n_layer``
    (-1: all; unknown ``n_layer``: all when any are offloaded)."""
    if n_gpu_layers == 0:
        return 0.0
    if n_gpu_layers < 0 or not n_layer:
        return 1.0
    return min(n_gpu_layers, n_layer) / n_layer
