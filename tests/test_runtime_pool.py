"""The model pool on real tiny models: one load per model however it is shared, LRU
eviction by count and by memory budget, counters, and what Runner.close() frees."""

from __future__ import annotations

import threading
import time

import pytest

from magi.errors import MAGIException
from magi.runtime.backend import GenerationSettings, ModelSpec
from magi.runtime.llama import LlamaBackend
from magi.runtime.pool import ModelPool
from magi.runtime.resolve import resolve_models
from magi.testing import SEED_MODELS, write_tiny_model
from magi.testing.runtime import CODER, FAST, REASONER, TinyRuntime, tagged

ALL_THREE = f"profile.enabled_models=[{FAST},{REASONER},{CODER}]"


@pytest.fixture
def specs(tiny_runtime: TinyRuntime):
    """Specs of the three models, from the registry as a Runner gets them."""
    specs, _ = resolve_models(tiny_runtime.compose("development", ALL_THREE))
    return specs


def _pool(specs, **kwargs) -> ModelPool:
    pool = ModelPool(**kwargs)
    for spec in specs.values():
        pool.register(spec)
    return pool


# -- sharing --------------------------------------------------------------------------------
def test_one_model_in_two_tiers_loads_once(tiny_runtime: TinyRuntime) -> None:
    """model_tiers list form: the same model drafts (fast) and refines (powerful)."""
    with tiny_runtime.runner(
        "development",
        "scorer=tagged",
        f"profile.enabled_models=[{FAST}]",
        f"+profile.model_tiers.{FAST}=[fast,powerful]",
    ) as runner:
        assert runner.tier_members == {"fast": [FAST], "powerful": [FAST]}
        hard = runner.run(tagged("Prove it", 9.0))
        easy = runner.run(tagged("Hi", 1.0))
        stats = runner.pool.stats
    assert [(s.stage, s.tier, s.model_id) for s in hard.stages] == [
        ("draft", "fast", FAST),
        ("refine", "powerful", FAST),
    ]
    assert easy.model_id == FAST
    assert (stats.loads, stats.loads_by_model, stats.hits) == (1, {FAST: 1}, 2)


def test_runners_of_two_profiles_share_one_pool(tiny_runtime: TinyRuntime) -> None:
    pool = ModelPool()
    try:
        with (
            tiny_runtime.runner("development", pool=pool) as dev,
            tiny_runtime.runner("fast-only", pool=pool) as fast_only,
        ):
            assert dev.run("Hi").model_id == FAST
            assert fast_only.run("Hello").model_id == FAST
            assert dev.run("Hey").model_id == FAST
        assert pool.stats.loads_by_model == {FAST: 1}
        assert (pool.stats.loads, pool.stats.hits) == (1, 2)
        assert pool.loaded_ids == [FAST]  # a shared pool outlives its runners
    finally:
        pool.close()


def test_a_new_runner_with_other_sampling_settings_keeps_the_loaded_model(tiny_runtime: TinyRuntime) -> None:
    """Sweeps vary max_tokens, temperature, ...: none of them needs a reload."""
    pool = ModelPool()
    try:
        with tiny_runtime.runner("fast-only", pool=pool) as first:
            assert first.run("Hi").completion_tokens == 8
        overrides = ("runtime.max_tokens=3", "runtime.temperature=0.5", "runtime.prompt_template='{prompt}'")
        with tiny_runtime.runner("fast-only", *overrides, pool=pool) as second:
            assert second.run("Hi").completion_tokens == 3
        assert pool.stats.loads == 1 and pool.stats.closes == 0
        assert pool.spec(FAST).sampling.max_tokens == 3  # the newest settings apply
        with tiny_runtime.runner("fast-only", "runtime.n_ctx=128", pool=pool) as third:
            third.run("Hi")
        assert pool.stats.loads == 2 and pool.stats.closes == 1  # n_ctx is a load setting
    finally:
        pool.close()


# -- eviction ------------------------------------------------------------------------------
def test_lru_eviction_by_count(specs) -> None:
    with _pool(specs, max_loaded=2) as pool:
        pool.preload(FAST)
        pool.preload(REASONER)
        pool.preload(FAST)  # FAST is now the most recently used
        pool.preload(CODER)
        assert pool.loaded_ids == [FAST, CODER]
        assert not pool.backend(REASONER).loaded
        assert (pool.stats.loads, pool.stats.hits, pool.stats.evictions, pool.stats.closes) == (3, 1, 1, 1)
        pool.preload(REASONER)  # loads again; FAST is least recent now
        assert pool.loaded_ids == [CODER, REASONER]
        assert pool.stats.loads_by_model == {FAST: 1, REASONER: 2, CODER: 1}
        assert pool.stats.evictions == 2
    assert pool.loaded_ids == [] and pool.stats.closes == 4


def test_pinned_models_are_never_evicted(specs) -> None:
    with _pool(specs, max_loaded=1) as pool:
        pool.pin(FAST)
        pool.preload(FAST)
        pool.preload(REASONER)  # over budget, but the only candidate is pinned
        assert pool.loaded_ids == [FAST, REASONER]
        pool.preload(CODER)  # REASONER is the least recent unpinned model
        assert pool.loaded_ids == [FAST, CODER]
        assert pool.stats.evictions == 1


def test_a_model_in_use_is_not_evicted(specs) -> None:
    with _pool(specs, max_loaded=1) as pool:
        with pool.lease(FAST) as busy:
            pool.preload(REASONER)
            assert busy.loaded and pool.loaded_ids == [FAST, REASONER]
        pool.preload(REASONER)  # FAST is idle now: evicted
        assert pool.loaded_ids == [REASONER]


def test_lru_eviction_by_memory_budget(specs) -> None:
    biggest = max(spec.memory_mb for spec in specs.values())
    assert biggest > 0
    with _pool(specs, memory_budget_mb=2.5 * biggest) as pool:
        for model_id in (FAST, REASONER, FAST, CODER):
            pool.preload(model_id)
        assert pool.loaded_ids == [FAST, CODER]
        assert pool.loaded_memory_mb <= pool.memory_budget_mb
        assert pool.stats.evictions == 1


def test_runner_applies_max_loaded_models(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("development", "scorer=tagged", "runtime.max_loaded_models=1") as runner:
        runner.run(tagged("Hard", 9.0))  # FAST drafts, REASONER refines: FAST is evicted
        assert runner.pool.loaded_ids == [REASONER]
        runner.run(tagged("Easy", 1.0))
        assert runner.pool.loaded_ids == [FAST]
        stats = runner.pool.stats
    assert (stats.loads, stats.evictions) == (3, 2)
    assert runner.status()[FAST]["loaded"] is False  # closed with the runner's own pool


# -- close ---------------------------------------------------------------------------------
def test_close_frees_an_owned_pool_and_stops_health_checks(tiny_runtime: TinyRuntime) -> None:
    runner = tiny_runtime.runner("production", start_health_checks=True)
    with runner:
        assert runner.health.running  # production balances, so its models are probed
        runner.run("a")
        runner.run("b")
        backends = [runner.pool.backend(m) for m in (REASONER, CODER)]
        assert all(b.loaded for b in backends)
    assert runner.pool.loaded_ids == []
    assert not any(b.loaded for b in backends)
    assert not runner.health.running
    runner.close()  # twice is harmless
    with pytest.raises(MAGIException, match="closed") as info:
        runner.run("again")
    assert info.value.status_code == 409


def test_close_leaves_a_shared_pool_alone(tiny_runtime: TinyRuntime) -> None:
    pool = ModelPool()
    try:
        with tiny_runtime.runner("fast-only", pool=pool) as runner:
            runner.run("Hi")
        assert pool.loaded_ids == [FAST] and pool.backend(FAST).loaded
        with tiny_runtime.runner("fast-only", pool=pool) as again:
            again.run("Hi")
        assert pool.stats.loads == 1
    finally:
        pool.close()
    assert pool.loaded_ids == []


def test_runners_sharing_a_pool_keep_their_own_prompt_templates(echo_runtime: TinyRuntime) -> None:
    """The completion template is a per-call setting: a runner registered later on the
    same pool does not change what an earlier runner sends to the shared model."""
    pool = ModelPool()
    try:
        with (
            echo_runtime.runner("fast-only", "runtime.prompt_template='{prompt}'", pool=pool) as bare,
            echo_runtime.runner("fast-only", "runtime.prompt_template='{prompt}!'", pool=pool) as loud,
        ):
            # the echo model repeats the last character of the text it was given
            assert set(bare.run("Hello").text) == {"o"}
            assert set(loud.run("Hello").text) == {"!"}
        assert pool.stats.loads == 1
    finally:
        pool.close()


def test_prompt_tokens_count_the_templated_prompt(echo_runtime: TinyRuntime) -> None:
    """The trace counts what the model processed, template included."""
    with (
        echo_runtime.runner("fast-only", "runtime.prompt_template='{prompt}'") as bare,
        echo_runtime.runner("fast-only", "runtime.prompt_template='Question: {prompt} Answer:'") as framed,
    ):
        plain = bare.run("Hello").stages[0].prompt_tokens
        templated = framed.run("Hello").stages[0].prompt_tokens
    assert templated > plain
    assert templated - plain >= len("Question:  Answer:") // 2  # one token per character or so


# -- limits under concurrency ---------------------------------------------------------------
class _Census:
    """A backend factory of real llama.cpp backends that counts how many are loaded at
    once: ``peak`` is what ``max_loaded_models`` must bound, ``peak_mb`` (the specs'
    estimates) what ``memory_budget_mb`` must."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live = 0
        self.peak = 0
        self.live_mb = 0.0
        self.peak_mb = 0.0

    def __call__(self, spec: ModelSpec) -> LlamaBackend:
        return _CountedBackend(spec, self)


class _CountedBackend(LlamaBackend):
    def __init__(self, spec: ModelSpec, census: _Census) -> None:
        super().__init__(spec)
        self.census = census

    def load(self) -> None:
        if self.loaded:
            return
        super().load()
        with self.census.lock:
            self.census.live += 1
            self.census.peak = max(self.census.peak, self.census.live)
            self.census.live_mb += self.spec.memory_mb
            self.census.peak_mb = max(self.census.peak_mb, self.census.live_mb)

    def close(self) -> None:
        was_loaded = self.loaded
        super().close()
        if was_loaded:
            with self.census.lock:
                self.census.live -= 1
                self.census.live_mb -= self.spec.memory_mb


def _in_threads(work, n: int = 8) -> list[str]:
    """Run ``work(i)`` in ``n`` threads started together; the errors they raised."""
    errors: list[str] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    return errors


def test_max_loaded_holds_with_eight_threads_over_three_models(specs) -> None:
    census = _Census()
    order = [FAST, REASONER, CODER]
    with _pool(specs, max_loaded=1, backend_factory=census) as pool:

        def work(i: int) -> None:
            for n in range(6):
                model_id = order[(i + n) % 3]
                with pool.lease(model_id) as backend:
                    assert pool.max_loaded == 1
                    "".join(backend.stream("Hi", GenerationSettings(max_tokens=2)))

        assert _in_threads(work) == []
        assert census.peak == 1  # never two at once, not even for a moment
        assert pool.stats.evictions == pool.stats.loads - 1 >= 2
        assert len(pool.loaded_ids) == 1


def test_max_loaded_holds_under_concurrency_through_a_runner(tiny_runtime: TinyRuntime) -> None:
    """production balances round-robin over two models; with max_loaded_models=1 the
    requests take turns instead of loading both."""
    census = _Census()
    with tiny_runtime.runner("production", "runtime.max_loaded_models=1", backend_factory=census) as runner:
        answered: list[str] = []
        errors = _in_threads(lambda i: answered.extend(runner.run(f"q{i}{n}").model_id for n in range(3)))
        assert errors == []
    assert census.peak == 1
    assert sorted(set(answered)) == sorted([REASONER, CODER]) and len(answered) == 24


def test_a_load_waiting_for_room_honours_the_lease_timeout(specs) -> None:
    """Another thread holds the only loaded model: a load that needs its room waits,
    up to the lease's timeout, and then says what it waited for."""
    outcome: list[str] = []

    def load_reasoner() -> None:
        try:
            with pool.lease(REASONER, timeout=0.3):
                outcome.append("loaded over the limit")
        except TimeoutError as exc:
            outcome.append(str(exc))

    with _pool(specs, max_loaded=1) as pool:
        with pool.lease(FAST):
            other = threading.Thread(target=load_reasoner, daemon=True)
            other.start()
            other.join(timeout=120)
        assert len(outcome) == 1
        assert outcome[0].startswith(f"No room to load model '{REASONER}' within 0.3s")
        assert "max_loaded_models=1" in outcome[0] and f"{FAST} stayed busy" in outcome[0]
        assert pool.loaded_ids == [FAST] and pool.stats.loads == 1


def test_a_nested_lease_in_another_thread_does_not_deadlock_a_waiting_load(specs) -> None:
    """Thread 2 waits for room to load REASONER while thread 1 holds FAST; thread 1 then
    asks for REASONER too (a nested lease). Waiting on would deadlock: thread 2 stops
    waiting and loads over the limit, and both finish."""
    done: list[str] = []
    with _pool(specs, max_loaded=1) as pool:

        def second() -> None:
            pool.preload(REASONER)
            done.append("second")

        with pool.lease(FAST):
            other = threading.Thread(target=second, daemon=True)
            other.start()
            time.sleep(0.3)  # let it reach the wait for room (the test holds either way)
            with pool.lease(REASONER, timeout=20):
                done.append("nested")
        other.join(timeout=60)
        assert sorted(done) == ["nested", "second"]


def test_a_runner_without_limits_does_not_inherit_a_closed_runners(tiny_runtime: TinyRuntime) -> None:
    """On a shared pool the strictest *open* runner's limits apply; a runner's limits
    end with it."""
    pool = ModelPool()
    try:
        with tiny_runtime.runner("production", "runtime.max_loaded_models=1", pool=pool) as limited:
            assert pool.max_loaded == 1
            limited.run("a")
            limited.run("b")  # round robin: the other model, so the first is evicted
            assert len(pool.loaded_ids) == 1
            with tiny_runtime.runner("production", pool=pool) as unlimited:
                assert pool.max_loaded == 1  # the open runner's limit still holds
                unlimited.run("c")
                unlimited.run("d")
                assert len(pool.loaded_ids) == 1
        assert pool.max_loaded is None
        with tiny_runtime.runner("production", pool=pool) as later:
            assert pool.max_loaded is None and pool.memory_budget_mb is None
            later.run("e")
            later.run("f")
            assert sorted(pool.loaded_ids) == sorted([REASONER, CODER])
        with tiny_runtime.runner("production", "runtime.max_loaded_models=1", pool=pool):
            assert len(pool.loaded_ids) == 1  # a stricter runner evicts at once
    finally:
        pool.close()


# -- eviction by memory with models of different sizes ---------------------------------------
def test_memory_budget_evicts_as_many_models_as_a_big_one_needs(tiny_runtime: TinyRuntime) -> None:
    """Two small models fit the budget together; the big one only alone. Loading it must
    evict both (one eviction per load is not enough), and a small one evicts it again."""
    spec = SEED_MODELS[CODER]
    write_tiny_model(
        tiny_runtime.path(CODER),
        name=spec.name,
        basename=spec.basename,
        size_label=spec.size_label,
        finetune=spec.finetune,
        n_embd=256,
        n_ff=4096,  # about 26 MB of weights, the others 0.5 MB
    )
    tiny_runtime.write_profile(
        "three-sizes",
        {
            "profile": {"name": "Three Sizes", "description": "one model per tier"},
            "enabled_models": [FAST, REASONER, CODER],
            "model_tiers": {FAST: "small", REASONER: "medium", CODER: "large"},
            "tier_config": [
                {"name": "small", "max_score": 3.0},
                {"name": "medium", "max_score": 6.0},
                {"name": "large", "max_score": 10.0},
            ],
        },
    )
    sizes = {m: s.memory_mb for m, s in resolve_models(tiny_runtime.compose("three-sizes"))[0].items()}
    small = sizes[FAST] + sizes[REASONER]
    assert sizes[CODER] > 1.5 * small  # clearly different sizes (each estimate has 8 MB overhead)
    budget = sizes[CODER] + min(sizes[FAST], sizes[REASONER]) / 2  # the big one fits only alone
    census = _Census()
    with tiny_runtime.runner(
        "three-sizes", "scorer=tagged", f"runtime.memory_budget_mb={budget}", backend_factory=census
    ) as runner:
        assert runner.run(tagged("a", 1.0)).model_id == FAST
        assert runner.run(tagged("b", 5.0)).model_id == REASONER
        assert runner.pool.loaded_ids == [FAST, REASONER]  # together within the budget
        assert runner.run(tagged("c", 9.0)).model_id == CODER
        assert runner.pool.loaded_ids == [CODER]
        assert runner.pool.stats.evictions == 2
        assert runner.run(tagged("d", 1.0)).model_id == FAST
        assert runner.pool.loaded_ids == [FAST]
        assert runner.pool.stats.evictions == 3
    # evicted before the big one loaded, not after: never over the budget, even briefly
    assert census.peak_mb <= budget


# -- the trace's wait/load split ---------------------------------------------------------------
LOAD_S = 1.5


class _SlowLoad(LlamaBackend):
    """A real backend whose load takes LOAD_S seconds longer."""

    def load(self) -> None:
        if not self.loaded:
            time.sleep(LOAD_S)
        super().load()


def test_load_time_is_waiting_not_generating(tiny_runtime: TinyRuntime) -> None:
    """The first request pays the slow load: it shows in wait_s, not in the stage's
    ttft_s/total_s (generating 8 tokens on a tiny model takes milliseconds, far below
    LOAD_S even on a slow machine)."""
    with tiny_runtime.runner("fast-only", backend_factory=_SlowLoad) as runner:
        first = runner.run("Hi")
        second = runner.run("Hi")
    (stage,) = first.stages
    assert stage.wait_s >= LOAD_S
    assert stage.ttft_s < LOAD_S and stage.total_s < LOAD_S
    assert first.total_s >= stage.wait_s + stage.total_s
    assert first.wait_s == stage.wait_s and first.to_dict()["wait_s"] == stage.wait_s
    assert f"(of which {stage.wait_s:.2f} s waiting for or loading models)" in first.explain()
    assert first.decode_tokens_per_s > first.tokens_per_s  # no load or prompt time in it
    assert second.stages[0].wait_s < LOAD_S  # loaded already
