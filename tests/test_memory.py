"""Memory estimates: weights + KV cache + overhead, from metadata."""

from __future__ import annotations

import pytest

from magi.models.memory import MIB, OVERHEAD_FIXED_MB, estimate_memory, kv_cache_bytes


def test_kv_cache_textbook_formula() -> None:
    # 2 (K and V) * n_layer * n_ctx * n_embd_kv * 2 bytes, n_embd_kv = n_head_kv * head_dim
    n_layer, n_ctx, n_embd, n_head, n_head_kv = 36, 4096, 2560, 32, 8
    head_dim = n_embd // n_head
    expected = 2 * n_layer * n_ctx * (n_head_kv * head_dim) * 2
    assert (
        kv_cache_bytes(
            n_ctx=n_ctx, n_layer=n_layer, n_head_kv=n_head_kv, key_length=head_dim, value_length=head_dim
        )
        == expected
    )
    est = estimate_memory(
        file_size=0, n_ctx=n_ctx, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv
    )
    assert est.kv_cache_mb == pytest.approx(expected / MIB)


def test_gemma_3_270m_figures() -> None:
    """Gemma 3 270M: 18 layers, 1 KV head of 256+256: 36 MiB of KV cache at n_ctx 2048."""
    est = estimate_memory(
        file_size=253_113_024,
        n_ctx=2048,
        n_layer=18,
        n_embd=640,
        n_head=4,
        n_head_kv=1,
        key_length=256,
        value_length=256,
        context_length=32768,
    )
    assert est.kv_cache_mb == pytest.approx(36.0)
    assert est.weights_mb == pytest.approx(241.39, abs=0.01)
    assert est.total_mb == pytest.approx(309.5, abs=0.1)


def test_n_ctx_is_capped_and_missing_metadata_gives_no_kv() -> None:
    capped = estimate_memory(
        file_size=MIB, n_ctx=100_000, n_layer=2, n_embd=64, n_head=4, context_length=4096
    )
    assert capped.n_ctx == 4096
    bare = estimate_memory(file_size=MIB, n_ctx=2048, n_layer=None, n_embd=None, n_head=None)
    assert bare.kv_cache_mb == 0 and bare.total_mb == pytest.approx(1 + OVERHEAD_FIXED_MB + 0.1)
