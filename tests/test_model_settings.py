"""Model settings in one place (issue 12): load and sampling settings declared once,
merged per model in one call, passed to llama.cpp by their own names; the llama.cpp
options users expect (GPU offload, KV cache types, threads, grammars, ...); where each
model runs; GPU memory apart from host memory.

The llama.cpp path is real: the tiny generated GGUF models are loaded and sampled, and
what reaches ``llama_cpp.Llama`` is read back from the loaded context's parameters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import llama_cpp
import pytest
from pydantic import Field

from magi.cli import main
from magi.config.model_settings import (
    LoadSettings,
    ModelOverrides,
    SamplingSettings,
    default_extra_bufts,
    merge,
    placement,
)
from magi.errors import ConfigError, ModelError
from magi.machine import usable_cores
from magi.models.memory import estimate_memory
from magi.runtime.backend import GenerationSettings, ModelSpec, stage_settings
from magi.runtime.llama import LlamaBackend
from magi.runtime.pool import ModelPool
from magi.runtime.resolve import default_batch_threads, default_threads
from magi.testing.runtime import CODER, FAST, REASONER, TinyRuntime, tagged

GREEDY = {"temperature": 0.0, "stop": [], "prompt_template": "{prompt}"}


def _backend(path: Path, **load: object) -> LlamaBackend:
    settings = LoadSettings.model_validate(
        {"n_ctx": 128, "n_threads": 1, "chat_format": "completion", **load}
    )
    return LlamaBackend(ModelSpec("m", path=path, load=settings))


def _text(backend: LlamaBackend, prompt: str = "Hello", **sampling: object) -> str:
    return "".join(backend.stream(prompt, GenerationSettings.model_validate({**GREEDY, **sampling})))


# -- one home --------------------------------------------------------------------------
def test_flat_runtime_keys_are_the_defaults_and_a_model_overrides_any_field(
    tiny_runtime: TinyRuntime,
) -> None:
    with tiny_runtime.runner(
        "development",
        "runtime.top_k=7",
        "runtime.n_threads_batch=1",
        f"+runtime.models.{REASONER}={{n_ctx: 128, top_k: 3, type_k: q8_0, n_gpu_layers: 0}}",
    ) as runner:
        fast, reasoner = runner.specs[FAST], runner.specs[REASONER]
    assert (fast.load.n_ctx, fast.load.n_threads, fast.load.n_threads_batch) == (256, 1, 1)
    assert (fast.sampling.top_k, fast.sampling.max_tokens, fast.load.type_k) == (7, 8, None)
    assert (reasoner.load.n_ctx, reasoner.sampling.top_k, reasoner.load.type_k) == (128, 3, "q8_0")
    assert reasoner.sampling.max_tokens == 8  # not overridden: the default


def test_merge_is_one_call_over_every_field() -> None:
    """Every load and sampling field may be overridden per model, with the same constraints."""
    assert set(ModelOverrides.model_fields) == set(LoadSettings.model_fields) | set(
        SamplingSettings.model_fields
    )
    own = ModelOverrides(n_ctx=64, min_p=0.2, stop=["END"])
    assert merge(LoadSettings(n_ctx=512, n_batch=32), own) == LoadSettings(n_ctx=64, n_batch=32)
    merged = merge(SamplingSettings(top_k=5), own)
    assert (merged.min_p, merged.stop, merged.top_k) == (0.2, ["END"], 5)
    with pytest.raises(ValueError, match="empty stop string"):
        ModelOverrides(stop=[""])


def test_a_typo_under_runtime_models_is_refused_with_a_did_you_mean(tiny_runtime: TinyRuntime) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_runtime.compose("development", f"+runtime.models.{FAST}.n_gpu_layer=1")
    assert info.value.status_code == 422
    message = str(info.value)
    assert f"runtime.models.{FAST}.n_gpu_layer" in message and "Did you mean 'n_gpu_layers'" in message


def test_settings_for_a_model_that_no_enabled_model_has_are_refused(tiny_runtime: TinyRuntime) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_runtime.runner("development", "+runtime.models.qwen3_4p0b_q4km_fats.n_ctx=64")
    assert info.value.status_code == 422
    message = str(info.value)
    assert "runtime.models.qwen3_4p0b_q4km_fats" in message and f"Did you mean '{FAST}'" in message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("runtime.n_gpu_layers=-2", "runtime.n_gpu_layers"),
        ("runtime.type_k=q3", "runtime.type_k"),
        ("runtime.tensor_split=[0,0]", "runtime.tensor_split"),
        ("runtime.split_mode=columns", "runtime.split_mode"),
        ("runtime.json_schema='{not json'", "runtime.json_schema"),
        ("runtime.json_schema={type: nonsense}", "runtime.json_schema"),
        ("runtime.grammar='root ::= (\"a\"'", "runtime.grammar"),  # llama.cpp would crash on it
        ("runtime.grammar='answer ::= \"a\"'", "runtime.grammar"),  # no root rule
        ("runtime.grammar=''", "runtime.grammar"),
        ("runtime.type_v=q8_0", "runtime.type_v"),  # a quantised V cache needs flash_attn
        # the conversation settings
        ("++runtime.system_prompt=' '", "runtime.system_prompt"),
        (f"++runtime.models.{FAST}.system_prompt=' '", f"runtime.models.{FAST}.system_prompt"),
        ("++runtime.system_template='no field'", "runtime.system_template"),
        ("++runtime.answer_template='no field'", "runtime.answer_template"),
        ("++runtime.state_cache_mb=-1", "runtime.state_cache_mb"),
        (f"++runtime.models.{FAST}.system_promt=x", "Did you mean 'system_prompt'"),
    ],
)
def test_bad_settings_are_422_errors_naming_the_field(
    tiny_runtime: TinyRuntime, override: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_runtime.compose("development", override)
    assert info.value.status_code == 422 and field in str(info.value)


def test_one_function_gives_a_stage_budget_for_runner_route_and_widget(
    tiny_runtime: TinyRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    """The draft's own budget replaces max_tokens; other stages take the model's."""
    sampling = SamplingSettings(max_tokens=float("inf"), top_k=9)
    assert stage_settings(sampling).max_tokens is None
    draft = stage_settings(sampling, 4)
    assert (draft.max_tokens, draft.top_k) == (4, 9)
    hard = tagged("Prove it", 8.0)  # routed to two stages by the tagged scorer
    overrides = ("scorer=tagged", "runtime.max_tokens=6")
    with tiny_runtime.runner("development", *overrides) as runner:
        result = runner.run(hard)
    assert [(s.stage, s.completion_tokens) for s in result.stages] == [("draft", 4), ("refine", 6)]
    # magi route reports the same budgets
    options = [f"--override={o}" for o in (*tiny_runtime.overrides, *overrides)]
    assert main(["route", "--json", "--profile", "development", *options, hard]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    stages = plan["stages"]
    assert [s["max_tokens"] for s in stages] == [4, 6]


# -- what reaches llama.cpp --------------------------------------------------------------
def test_every_load_setting_reaches_llama_by_its_name(tiny_model: Path) -> None:
    backend = _backend(
        tiny_model,
        n_threads=1,
        n_threads_batch=2,
        n_batch=64,
        n_ubatch=32,
        type_k="q8_0",
        rope_freq_base=20000.0,
        offload_kqv=False,
        n_gpu_layers=-1,  # a CPU build ignores it, but it is passed on
    )
    backend.load()
    try:
        ctx = backend._llm.context_params
        assert (ctx.n_threads, ctx.n_threads_batch, ctx.n_batch, ctx.n_ubatch) == (1, 2, 64, 32)
        assert ctx.type_k == llama_cpp.GGML_TYPE_Q8_0 and ctx.rope_freq_base == 20000.0
        assert ctx.offload_kqv is False
        assert backend._llm.model_params.n_gpu_layers == 2**31 - 1  # llama-cpp-python's "all" for -1
        assert _text(backend, max_tokens=4)  # it still generates
    finally:
        backend.close()


def test_a_field_added_to_the_load_settings_reaches_llama_with_no_other_change(tiny_model: Path) -> None:
    class WithYarn(LoadSettings):
        yarn_orig_ctx: int = Field(default=0, description="llama.cpp's YaRN original context.")

    spec = ModelSpec("m", path=tiny_model, load=WithYarn(n_ctx=64, n_threads=1, yarn_orig_ctx=77))
    backend = LlamaBackend(spec)
    backend.load()
    try:
        assert backend._llm.context_params.yarn_orig_ctx == 77
    finally:
        backend.close()


def test_gpu_options_become_llama_arguments(tiny_model: Path) -> None:
    """The GPU path, checked by what the backend passes to ``Llama(...)`` (a CPU build
    cannot load with several GPUs; the real GPU run needs a GPU machine)."""
    kwargs = _backend(
        tiny_model,
        n_gpu_layers=-1,
        main_gpu=1,
        split_mode="row",
        tensor_split=[3, 1],
        flash_attn=True,
        type_k="q4_0",
        type_v="q8_0",
        use_mlock=True,
        use_mmap=False,
    ).llama_kwargs()
    assert kwargs["model_path"] == str(tiny_model)
    assert (kwargs["n_gpu_layers"], kwargs["main_gpu"], kwargs["tensor_split"]) == (-1, 1, [3.0, 1.0])
    assert kwargs["split_mode"] == llama_cpp.LLAMA_SPLIT_MODE_ROW and kwargs["flash_attn"] is True
    assert (kwargs["type_k"], kwargs["type_v"]) == (llama_cpp.GGML_TYPE_Q4_0, llama_cpp.GGML_TYPE_Q8_0)
    assert (kwargs["use_mlock"], kwargs["use_mmap"], kwargs["verbose"]) == (True, False, False)


def test_a_gbnf_grammar_constrains_the_answer(tiny_model: Path) -> None:
    backend = _backend(tiny_model)
    backend.load()
    try:
        free = _text(backend, max_tokens=6)
        constrained = _text(backend, max_tokens=6, grammar='root ::= ("yes" | "no") "."')
        number = _text(backend, max_tokens=6, json_schema={"type": "integer"})
    finally:
        backend.close()
    assert free not in ("yes.", "no.")  # random weights write anything unconstrained
    assert constrained in ("yes.", "no.")
    assert re.fullmatch(r"-?\d+", number.strip()), number


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_logit_bias_and_penalties_reach_the_sampler(tiny_model: Path, penalty: str) -> None:
    backend = _backend(tiny_model)
    backend.load()
    try:
        free = _text(backend, max_tokens=5)
        token = backend._llm.tokenize(b"z", add_bos=False)[-1]
        piece = backend._llm.detokenize([token]).decode()
        biased = _text(backend, max_tokens=5, logit_bias={token: 100.0})
        penalised = _text(backend, max_tokens=5, logit_bias={token: 100.0}, **{penalty: 200.0})
    finally:
        backend.close()
    assert biased == piece * 5 != free
    assert penalised != biased  # once written, the token's penalty outweighs its bias


def test_extra_buffers_reach_llama_cpp_and_are_off_by_default_where_amx_kernels_crash(
    tiny_model: Path, tiny_runtime: TinyRuntime
) -> None:
    """llama.cpp's extra weight buffers (repacking, AMX) are a model parameter that
    ``Llama(...)`` does not take: the backend sets it. Left unset, it is off only on a
    build with AMX kernels, which crash on quantised models (llama.cpp #20824: SmolLM2 and
    Gemma segfault on their first token on such a machine), and on everywhere else."""
    amx = "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode()
    assert default_extra_bufts() is (not amx)
    with tiny_runtime.runner("fast-only") as runner:
        assert runner.specs[FAST].load.use_extra_bufts is (not amx)
    for setting in (False, True):
        backend = _backend(tiny_model, use_extra_bufts=setting)
        assert "use_extra_bufts" not in backend.llama_kwargs()  # not a Llama() argument
        backend.load()
        try:
            assert backend._llm.model_params.use_extra_bufts is setting
            assert _text(backend, max_tokens=3)
        finally:
            backend.close()
    assert llama_cpp.llama_model_default_params().use_extra_bufts is True  # llama.cpp's own, untouched


def test_top_k_and_min_p_reach_the_sampler(tiny_model: Path) -> None:
    """Hot sampling on random weights writes something else from greedy; top_k 1 or min_p 1
    leave only the likeliest token, so the answer is greedy's again."""
    backend = _backend(tiny_model)
    backend.load()
    try:
        greedy = _text(backend, max_tokens=8)
        hot = {"temperature": 5.0, "seed": 7, "max_tokens": 8}
        free = _text(backend, **hot)
        top_1 = _text(backend, **hot, top_k=1)
        min_p_1 = _text(backend, **hot, top_k=0, min_p=1.0)
    finally:
        backend.close()
    assert free != greedy
    assert top_1 == greedy and min_p_1 == greedy


# -- defaults --------------------------------------------------------------------------
def test_thread_defaults_leave_a_core_free(tiny_runtime: TinyRuntime) -> None:
    assert default_threads() == default_batch_threads() == max(1, usable_cores() - 1)
    overrides = [o for o in tiny_runtime.overrides if not o.startswith("runtime.n_threads")]
    tiny_runtime.overrides = overrides
    with tiny_runtime.runner("fast-only") as runner:
        load = runner.specs[FAST].load
    assert (load.n_threads, load.n_threads_batch) == (default_threads(), default_threads())


def test_gpu_layers_default_to_what_the_build_can_do(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("fast-only") as runner:
        spec = runner.specs[FAST]
    if llama_cpp.llama_supports_gpu_offload():
        assert spec.load.n_gpu_layers == -1 and spec.placement.startswith("GPU")
    else:  # the CPU build CI tests
        assert spec.load.n_gpu_layers == 0 and spec.placement == "CPU" and spec.gpu_memory_mb == 0


def test_placement_says_where_a_model_runs() -> None:
    assert placement(0, 24) == "CPU"
    assert placement(12, 24) == "GPU 12/24 layers"
    assert placement(-1, 24) == placement(99, 24) == "GPU 24/24 layers"
    assert placement(-1, None) == "GPU all layers"


# -- memory ----------------------------------------------------------------------------
def test_memory_estimate_splits_gpu_from_host_by_offloaded_layers() -> None:
    shape = {"file_size": 1000 * 1024 * 1024, "n_ctx": 4096, "n_layer": 24, "n_embd": 2048, "n_head": 16}
    cpu = estimate_memory(**shape)
    half = estimate_memory(**shape, n_gpu_layers=12)
    full = estimate_memory(**shape, n_gpu_layers=-1)
    assert cpu.gpu_mb == 0 and cpu.host_mb == cpu.total_mb
    assert half.total_mb == full.total_mb == cpu.total_mb
    assert half.gpu_mb == pytest.approx(0.5 * (half.weights_mb + half.kv_cache_mb) + half.overhead_mb)
    assert full.host_mb == pytest.approx(0.0)
    kv_on_host = estimate_memory(**shape, n_gpu_layers=-1, offload_kqv=False)
    assert kv_on_host.host_mb == pytest.approx(cpu.kv_cache_mb)
    q8 = estimate_memory(**shape, type_k="q8_0", type_v="q8_0")
    assert q8.kv_cache_mb == pytest.approx(cpu.kv_cache_mb * 34 / 64)


def test_the_pool_budgets_gpu_memory_apart_from_host_memory() -> None:
    class Fake:
        def __init__(self, spec: ModelSpec) -> None:
            self.spec, self.loaded = spec, False

        def load(self) -> None:
            self.loaded = True

        def close(self) -> None:
            self.loaded = False

    pool = ModelPool(backend_factory=Fake, memory_budget_mb=1000, gpu_memory_budget_mb=500)  # type: ignore[arg-type]
    for name in ("a", "b"):
        pool.register(ModelSpec(name, path=Path(f"{name}.gguf"), memory_mb=100, gpu_memory_mb=300))
    pool.preload("a")
    pool.preload("b")  # host 200 of 1000 MB, but GPU 600 of 500: a is evicted
    assert pool.loaded_ids == ["b"] and pool.stats.evictions == 1
    assert pool.loaded_gpu_memory_mb == 300


def test_the_gpu_memory_budget_reaches_the_pool_from_the_config(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("fast-only", "runtime.gpu_memory_budget_mb=640") as runner:
        assert runner.pool.limits.gpu_memory_budget_mb == 640
        assert runner.pool.limits.memory_budget_mb == runner.config.runtime.memory_budget_mb


def test_trace_table_and_models_list_say_where_each_model_runs(
    tiny_runtime: TinyRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.tasks.run import routing_table

    with tiny_runtime.runner("fast-only") as runner:
        expected = runner.specs[FAST].placement
        result = runner.run("Hi")
    assert expected == ("CPU" if not llama_cpp.llama_supports_gpu_offload() else expected)
    assert result.stages[0].placement == expected and result.to_dict()["stages"][0]["placement"] == expected
    assert f"{FAST} on {expected}:" in result.explain()
    header, _rule, row = routing_table([result]).splitlines()
    assert header.split()[-2:] == ["runs", "on"] and row.endswith(expected)
    assert main(["models", "list", "--no-probe", "--registry", str(tiny_runtime.root / "registry.json")]) == 0
    out = capsys.readouterr().out
    assert "runs on" in out and all(expected in line for line in out.splitlines() if "_q4km_" in line)


def test_parallel_jobs_share_both_thread_counts(tiny_runtime: TinyRuntime, tmp_path: Path) -> None:
    """A sweep's jobs that run at once split the cores for decode and for prompts alike;
    an explicit setting is kept."""
    from magi.sweeps.jobs import JobInfo, fit_threads

    config = tiny_runtime.compose("fast-only", "runtime.n_threads=null")
    job = JobInfo(output_dir=tmp_path, parallel_jobs=usable_cores() + 1)  # more jobs than cores: 1 each
    fitted = fit_threads(config, job).runtime
    if usable_cores() > 1:
        assert (fitted.n_threads, fitted.n_threads_batch) == (1, 1)
    else:  # one core: the defaults already give 1 thread each
        assert fitted == config.runtime
    kept = fit_threads(tiny_runtime.compose("fast-only", "runtime.n_threads_batch=3"), job).runtime
    assert kept.n_threads_batch == 3


def test_a_per_model_setting_that_conflicts_with_the_defaults_names_the_model(
    tiny_runtime: TinyRuntime,
) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_runtime.runner(
            "development",
            "runtime.type_v=q8_0",
            "runtime.flash_attn=true",
            f"+runtime.models.{FAST}.flash_attn=false",
        )
    assert info.value.status_code == 422 and f"runtime.models.{FAST}.type_v" in str(info.value)


def test_a_load_setting_llama_cpp_refuses_says_why(tiny_model: Path) -> None:
    """llama.cpp's own reason, not "the file may be truncated": the tiny model's 16-wide
    heads do not fit q8_0's 32-element blocks."""
    backend = _backend(tiny_model, type_v="q8_0", flash_attn=True)
    with pytest.raises(ModelError) as info:
        backend.load()
    message = str(info.value)
    assert "does not divide" in message and "type_v" in message and "truncated" not in message


def test_a_registered_model_outside_the_profile_gets_its_own_settings(tiny_runtime: TinyRuntime) -> None:
    """A judge model outside the profile (a prompt set's 'judge') generates with its own
    settings: runtime.models.<id> may name any registered model, and they reach its spec."""
    from magi.runtime.resolve import load_registry, model_sampling, model_spec

    with tiny_runtime.runner("development", f"+runtime.models.{CODER}.max_tokens=32") as runner:
        config = runner.config
        assert CODER not in config.profile.enabled_models
        assert model_spec(load_registry(config).get(CODER), config.runtime).sampling.max_tokens == 32
        assert model_sampling(config.runtime, FAST).max_tokens != 32


def test_settings_for_an_id_neither_enabled_nor_registered_name_both(tiny_runtime: TinyRuntime) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_runtime.runner("development", f"+runtime.models.{CODER}x.max_tokens=32")
    message = str(info.value)
    assert f"runtime.models.{CODER}x: no enabled or registered model has this id" in message, message
    assert f"Did you mean '{CODER}'" in message
