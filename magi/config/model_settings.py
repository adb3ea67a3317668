"""The one home of a model's settings: how it is loaded, and how it generates.

:class:`LoadSettings` mirrors the arguments of ``llama_cpp.Llama(...)`` and
:class:`SamplingSettings` those of ``Llama.create_completion(...)``, field by field
and under the same names (as llama-cpp-python's own ``server/settings.py`` does), so
a new llama.cpp option is one field here: :meth:`LoadSettings.llama_kwargs` and
:meth:`SamplingSettings.llama_kwargs` pass every field on.

Where they are set:

* ``runtime.*`` holds the defaults, as flat keys (``runtime.n_ctx``,
  ``runtime.temperature``, ...): :class:`~magi.config.app.RuntimeConfig` inherits both.
* ``runtime.models.<id>`` overrides any of them for one model
  (:class:`ModelOverrides`, every field optional); :func:`merge` applies the fields a
  model sets on the defaults, in one call.

A few fields are MAGI's own, not llama.cpp's, and say so: ``prompt_template``,
``system_template`` and ``answer_template`` (the transcript completion-style models
are given, :func:`magi.runtime.templates.render_transcript`), ``system_prompt`` (a
model's default system message), ``grammar``/``json_schema`` (turned into a
``llama_cpp.LlamaGrammar`` by the backend), ``prompt_lookup``; and the load setting
``state_cache_mb`` (the size of the backend's cache of conversation states).
``None`` in :class:`LoadSettings` means
"MAGI chooses" (threads, GPU layers: resolved by :func:`resolve_load`) or
"llama.cpp's own default".
"""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, create_model, model_validator

from magi.config.base import ConsistencyError, MagiModel, describe_validation_error

#: KV cache types by name (``type_k``/``type_v``) -> the ``llama_cpp.GGML_TYPE_*`` constant's suffix.
KV_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
KVType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]
SplitMode = Literal["none", "layer", "row"]


def check_stop_strings(value: list[str] | None) -> list[str] | None:
    """Refuse an empty stop string: llama.cpp stops at once, and the empty answer would
    pass for a success."""
    if value and any(stop == "" for stop in value):
        raise ValueError("an empty stop string ends every answer before it starts; remove it")
    return value


def _check_tensor_split(value: list[float] | None) -> list[float] | None:
    if value is None:
        return value
    if any(part < 0 for part in value) or not sum(value) > 0:
        raise ValueError(
            f"must be shares of the model per GPU, none negative, summing to a positive number "
            f"(e.g. [3, 1]); got {value}"
        )
    return value


def _no_string_number(value: Any) -> Any:
    """YAML reads ``inf`` (no dot) as a string; refuse it with the fix (see base.refuse_string_number)."""
    from magi.config.base import refuse_string_number

    return refuse_string_number(value, "python")


def _whole_or_inf(value: float) -> float:
    if not math.isinf(value) and value != int(value):
        raise ValueError("must be a whole number of tokens, or .inf for unlimited")
    return value


def _has_prompt(value: str) -> str:
    if "{prompt}" not in value:
        raise ValueError("must contain {prompt}")
    return value


def _has_field(name: str) -> Any:
    def check(value: str) -> str:
        if "{" + name + "}" not in value:
            raise ValueError(f"must contain {{{name}}}")
        return value

    return check


def _system_text(value: str) -> str:
    """A system prompt is text a model is given: not blank, encodable (magi.prompt.check_prompt)."""
    from magi.prompt import InvalidPromptError, check_prompt

    try:
        return check_prompt(value, what="the system prompt")
    except InvalidPromptError as exc:
        raise ValueError(exc.message.removeprefix("the system prompt ")) from None


def _json_schema(value: Any) -> Any:
    """A JSON schema as a mapping, or as JSON text (the command line's form)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"is not valid JSON ({exc.msg}); write the schema as a mapping or JSON text"
            ) from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON schema object, e.g. {type: object, properties: {...}}")
    return value


def check_grammar(text: str) -> str:
    """Refuse a GBNF grammar llama.cpp cannot use: llama-cpp-python hands the NULL sampler
    of a grammar that does not parse (or has no ``root`` rule, or a left-recursive one) to
    llama.cpp, which crashes the process with a segmentation fault on the next answer."""
    if not text.strip():
        raise ValueError("is empty; write a GBNF grammar with a root rule, or leave it unset (null)")
    if not _grammar_parses(text):
        raise ValueError(
            "is not a GBNF grammar llama.cpp can use: it does not parse, has no 'root' rule, or "
            'a rule is left-recursive (e.g. root ::= ("yes" | "no") ".")'
        )
    return text


@functools.lru_cache(maxsize=64)
def _grammar_parses(text: str) -> bool:
    """Whether llama.cpp's own parser accepts ``text`` (no model needed: the vocabulary
    is only used by token references). Its parse error goes to the ``magi.llama_cpp`` log."""
    import llama_cpp

    from magi.runtime.llama import quiet_llama_logs

    quiet_llama_logs()
    sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def _check_json_schema(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse a schema llama.cpp's converter cannot turn into a grammar (it would fail on
    every answer instead)."""
    try:
        text = _schema_gbnf(json.dumps(value, sort_keys=True))
    except Exception as exc:  # the converter asserts and raises on what it does not know
        raise ValueError(f"cannot be turned into a grammar: {exc}") from None
    check_grammar(text)
    return value


def _lookup_tokens(value: Any) -> Any:
    """``false`` turns prompt lookup off (0); ``true`` says nothing about how many tokens to draft."""
    if value is False:
        return 0
    if value is True:
        raise ValueError(
            f"give the number of tokens to draft from the prompt (e.g. {PROMPT_LOOKUP_TOKENS}), "
            "or false for off"
        )
    return value


#: Tokens to draft per step when prompt lookup is turned on (``prompt_lookup: 10``); it is
#: off by default: on this project's CPU measurements (docs/PERFORMANCE.md) it slowed the
#: demo model's refines and changed greedy text (batched verification rounds differently).
PROMPT_LOOKUP_TOKENS = 10

StopList = Annotated[list[str], AfterValidator(check_stop_strings)]
PromptLookup = Annotated[int, BeforeValidator(_lookup_tokens), Field(ge=0, le=128)]
Grammar = Annotated[str, AfterValidator(check_grammar)]
MaxTokens = Annotated[float, BeforeValidator(_no_string_number), AfterValidator(_whole_or_inf)]
TensorSplit = Annotated[list[float], AfterValidator(_check_tensor_split)]
PromptTemplate = Annotated[str, AfterValidator(_has_prompt)]
SystemTemplate = Annotated[str, AfterValidator(_has_field("system"))]
AnswerTemplate = Annotated[str, AfterValidator(_has_field("answer"))]
SystemPrompt = Annotated[str, AfterValidator(_system_text)]
JsonSchema = Annotated[dict[str, Any], BeforeValidator(_json_schema), AfterValidator(_check_json_schema)]


class LoadSettings(MagiModel):
    """How a model is loaded: the arguments of ``llama_cpp.Llama(...)``, same names."""

    n_ctx: int = Field(default=2048, gt=0, description="Context length in tokens (capped at each model's).")
    n_threads: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Threads that generate (decode); default: usable cores - 1, at least 1 (decode is "
            "memory-bound, and a thread that has to share a busy core slows every token)."
        ),
    )
    n_threads_batch: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Threads that process the prompt; default: usable cores - 1, at least 1, like n_threads "
            "(on idle cores all of them are faster; on busy ones, several times slower)."
        ),
    )
    n_batch: int = Field(default=512, gt=0, description="Prompt tokens submitted per batch (logical).")
    n_ubatch: int | None = Field(
        default=None, gt=0, description="Physical batch size; default: llama.cpp's (512), at most n_batch."
    )
    n_gpu_layers: int | None = Field(
        default=None,
        ge=-1,
        description=(
            "Layers offloaded to the GPU; -1: all, 0: none (CPU). Default: all when the installed "
            "llama-cpp-python was built with GPU support (CUDA, Metal, ...), else 0."
        ),
    )
    main_gpu: int = Field(
        default=0, ge=0, description="GPU for the model (split_mode none) or its scratch buffers."
    )
    split_mode: SplitMode = Field(
        default="layer", description="How a model spreads over several GPUs: none, layer (by layers), row."
    )
    tensor_split: TensorSplit | None = Field(
        default=None, description="Share of the model per GPU, e.g. [3, 1]; default: by free memory."
    )
    flash_attn: bool = Field(
        default=False, description="Use flash attention (faster, less KV memory on GPU)."
    )
    type_k: KVType | None = Field(
        default=None, description="KV cache type of keys, by name: f16 (default), q8_0, q4_0, ..."
    )
    type_v: KVType | None = Field(
        default=None,
        description="KV cache type of values, by name: f16 (default), q8_0, q4_0 (quantised: flash_attn).",
    )
    offload_kqv: bool = Field(default=True, description="Keep the KV cache on the GPU with offloaded layers.")
    use_mmap: bool = Field(
        default=True,
        description=(
            "Memory-map model files (fast loads). Replace a loaded model's file by rename; "
            "set false to read the weights into memory if files must be modified in place."
        ),
    )
    use_mlock: bool = Field(default=False, description="Lock the weights in RAM (never swapped out).")
    rope_freq_base: float = Field(default=0.0, ge=0, description="RoPE base frequency; 0: the model's.")
    rope_freq_scale: float = Field(default=0.0, ge=0, description="RoPE frequency scaling; 0: the model's.")
    chat_format: str | None = Field(
        default=None,
        description=(
            "llama.cpp chat format name; default: the GGUF's chat template. 'completion': send the "
            "prompt through prompt_template even if the model has a chat template."
        ),
    )

    use_extra_bufts: bool | None = Field(
        default=None,
        description=(
            "llama.cpp's extra weight buffers (weights repacked for faster CPU kernels, AMX); a "
            "model parameter MAGI sets, not a Llama() argument. Unset: on, except with a llama.cpp "
            "build that has AMX kernels, which crash on quantised models (llama.cpp #20824)."
        ),
    )
    state_cache_mb: float = Field(
        default=256.0,
        ge=0,
        description=(
            "MAGI's, not a Llama() argument: memory (MB) for the saved states of in-process models' "
            "recent conversations, so a conversation resumed after another one ran on the same model "
            "re-processes only its new turn (least recently used states dropped first); 0: off."
        ),
    )

    #: Fields that are MAGI's own and not passed to ``Llama(...)``.
    MAGI_FIELDS: ClassVar[tuple[str, ...]] = ("state_cache_mb", "use_extra_bufts")

    @model_validator(mode="after")
    def _quantised_v_needs_flash_attn(self) -> LoadSettings:
        # llama.cpp refuses the context otherwise ("quantized V cache requires flash_attn")
        if self.type_v not in (None, "f32", "f16", "bf16") and not self.flash_attn:
            raise ConsistencyError(
                [f"type_v: a quantised V cache ({self.type_v}) needs flash_attn: true (or type_v: f16)"]
            )
        return self

    def llama_kwargs(self) -> dict[str, Any]:
        """``Llama(**kwargs)`` arguments from every field: names map one to one, KV types and
        the split mode become llama.cpp's constants, unset (None) fields are left to llama.cpp.
        A field added here (or in a subclass) reaches ``Llama(...)`` with no other change."""
        import llama_cpp

        kwargs = self.model_dump(exclude_none=True, exclude=set(self.MAGI_FIELDS))  # a subclass's go too
        kwargs["split_mode"] = getattr(llama_cpp, f"LLAMA_SPLIT_MODE_{self.split_mode.upper()}")
        for name in ("type_k", "type_v"):
            if name in kwargs:
                kwargs[name] = getattr(llama_cpp, f"GGML_TYPE_{kwargs[name].upper()}")
        if kwargs.get("chat_format") == "completion":
            del kwargs["chat_format"]
        kwargs["n_batch"] = min(self.n_batch, self.n_ctx)
        if self.n_ubatch is not None:
            kwargs["n_ubatch"] = min(self.n_ubatch, kwargs["n_batch"])
        return kwargs


class SamplingSettings(MagiModel):
    """How a model generates: the arguments of ``Llama.create_completion(...)``, same names,
    plus MAGI's transcript templates, default system prompt and a grammar for constrained output."""

    max_tokens: MaxTokens = Field(
        default=256,
        gt=0,
        description="Answer length when a stage sets none; .inf: until the context is full.",
    )
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling.")
    top_k: int = Field(default=40, ge=0, description="Sample among the k likeliest tokens; 0: all.")
    min_p: float = Field(
        default=0.05, ge=0, le=1, description="Drop tokens below this share of the likeliest's probability."
    )
    repeat_penalty: float = Field(
        default=1.1, gt=0, description="Penalty on repeated tokens (1.0: none); curbs loops in small models."
    )
    presence_penalty: float = Field(default=0.0, description="Penalty on tokens already present (OpenAI's).")
    frequency_penalty: float = Field(
        default=0.0, description="Penalty growing with a token's count so far (OpenAI's)."
    )
    logit_bias: dict[int, float] | None = Field(
        default=None,
        description="Added to the logits of token ids, e.g. {15043: -100} never writes that token.",
    )
    seed: int = Field(default=0, description="Sampling seed, for reproducible answers.")
    stop: StopList = Field(
        default_factory=lambda: ["\nQ:"],
        description="Stop sequences for every generation; none may be empty (it would stop at once).",
    )
    grammar: Grammar | None = Field(
        default=None,
        description="GBNF grammar the answer must follow (llama_cpp.LlamaGrammar.from_string); MAGI's field.",
    )
    json_schema: JsonSchema | None = Field(
        default=None,
        description=(
            "JSON schema the answer must follow (llama_cpp.LlamaGrammar.from_json_schema); MAGI's "
            "field. With both set, grammar applies."
        ),
    )
    prompt_template: PromptTemplate = Field(
        default="Q: {prompt}\nA:",
        description=(
            "MAGI's, not llama.cpp's: a user turn in the transcript of completion-style models (those "
            "without a chat template in their GGUF metadata, or chat_format: completion); '{prompt}' is "
            "filled in, consecutive user messages joined by a newline. A one-message conversation is "
            "this alone. Chat models get the messages through their chat template instead."
        ),
    )
    system_template: SystemTemplate = Field(
        default="{system}\n\n",
        description=(
            "MAGI's: how a system prompt opens a completion-style model's transcript; '{system}' is "
            "filled in. Without a system prompt the transcript starts with the first turn."
        ),
    )
    answer_template: AnswerTemplate = Field(
        default=" {answer}\n",
        description=(
            "MAGI's: an earlier assistant turn in a completion-style model's transcript, right after "
            "its prompt_template; '{answer}' is filled in with the answer's text, surrounding "
            "whitespace trimmed (consecutive assistant messages joined by a newline). With the "
            "defaults a transcript reads 'Q: Hi\\nA: Hello!\\nQ: And you?\\nA:'."
        ),
    )
    system_prompt: SystemPrompt | None = Field(
        default=None,
        description=(
            "MAGI's: the system message this model is given when the conversation has none of its "
            "own (the Runner's precedence: the conversation's, the call's system=, this, the "
            "profile's system_prompt); null: none."
        ),
    )

    prompt_lookup: PromptLookup = Field(
        default=0,
        description=(
            "MAGI's: prompt-lookup decoding of the refine stage of in-process models, as the number "
            "of tokens drafted from the prompt and verified in one batch "
            "(llama_cpp.LlamaPromptLookupDecoding(num_pred_tokens=N), e.g. 10); false or 0: off "
            "(the default: see docs/PERFORMANCE.md). Other stages never use it."
        ),
    )

    #: Fields that are MAGI's own and not passed to ``create_completion`` by name.
    MAGI_FIELDS: ClassVar[tuple[str, ...]] = (
        "prompt_template",
        "system_template",
        "answer_template",
        "system_prompt",
        "grammar",
        "json_schema",
        "prompt_lookup",
    )

    @property
    def max_tokens_or_none(self) -> int | None:
        """``max_tokens`` at the llama.cpp boundary: ``.inf`` (or None) becomes ``None`` (unlimited)."""
        value = self.max_tokens
        return None if value is None or math.isinf(value) else int(value)

    def grammar_text(self) -> str | None:
        """The GBNF the answer must follow: ``grammar``, or ``json_schema`` converted; None: free text."""
        if self.grammar is not None:
            return self.grammar
        if self.json_schema is not None:
            return _schema_gbnf(json.dumps(self.json_schema, sort_keys=True))
        return None

    def llama_kwargs(self) -> dict[str, Any]:
        """``create_completion`` / ``create_chat_completion`` arguments from every field (the
        grammar as a ``LlamaGrammar``, parsed once per text)."""
        # SamplingSettings' own fields: a subclass's (GenerationSettings' deadlines) are MAGI's
        kwargs = self.model_dump(include=set(SamplingSettings.model_fields) - set(self.MAGI_FIELDS))
        kwargs["max_tokens"] = self.max_tokens_or_none  # None: until the context is full
        kwargs["stop"] = list(self.stop) or None
        text = self.grammar_text()
        if text is not None:
            kwargs["grammar"] = llama_grammar(text)
        return kwargs


@functools.lru_cache(maxsize=32)
def _schema_gbnf(schema: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema)


@functools.lru_cache(maxsize=32)
def llama_grammar(text: str) -> Any:
    """A parsed ``llama_cpp.LlamaGrammar`` for a GBNF text (parsing is cached; it is read-only)."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(text, verbose=False)


M = TypeVar("M", bound=MagiModel)


def _all_optional(name: str, doc: str, *models: type[MagiModel]) -> type[MagiModel]:
    """A model with every field of ``models``, each optional (None: not set), keeping its
    constraints and validators (they live in the field's type) and its description."""
    fields: dict[str, Any] = {}
    for model in models:
        for field_name, info in model.model_fields.items():
            annotation: Any = info.annotation
            if info.metadata:
                annotation = Annotated[(annotation, *info.metadata)]  # type: ignore[valid-type]
            fields[field_name] = (annotation | None, Field(default=None, description=info.description))
    return create_model(name, __base__=MagiModel, __doc__=doc, **fields)  # type: ignore[call-overload, no-any-return]


ModelOverrides = _all_optional(
    "ModelOverrides",
    "One model's settings under ``runtime.models.<id>``: any load or sampling field; "
    "those left unset fall back to the ``runtime`` defaults.",
    LoadSettings,
    SamplingSettings,
)
#: Kept for the name users and older code know.
ModelSettings = ModelOverrides


def merge(base: M, own: MagiModel | None, where: str = "runtime.models.<id>") -> M:
    """``base`` with the fields ``own`` sets (not None), validated: the one merge of a
    model's overrides onto the defaults. Fields ``base`` does not have are ignored, so one
    :class:`ModelOverrides` serves both the load and the sampling settings.

    Raises:
        ConfigError: the merged settings are inconsistent (e.g. a model turns flash_attn
            off under a quantised type_v), each problem named under ``where``.
    """
    if own is None:
        return base
    update = {k: v for k, v in own.model_dump(exclude_none=True).items() if k in type(base).model_fields}
    try:
        return type(base).model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        from magi.errors import ConfigError

        raise ConfigError(describe_validation_error(exc, prefix=where)) from None


def pick(model: type[M], source: MagiModel) -> M:
    """The ``model`` fields of ``source`` (e.g. the load settings of ``runtime``)."""
    return model.model_validate(source.model_dump(include=set(model.model_fields)))


@functools.lru_cache(maxsize=1)
def gpu_offload_supported() -> bool:
    """Whether the installed llama-cpp-python can offload layers to a GPU (CUDA, Metal, ...)."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # no llama_cpp, or an old one without the call: CPU only
        return False


def default_gpu_layers() -> int:
    """``runtime.n_gpu_layers`` left unset: all layers (-1) when llama.cpp can offload, else 0."""
    return -1 if gpu_offload_supported() else 0


@functools.lru_cache(maxsize=1)
def amx_kernels() -> bool:
    """Whether the installed llama.cpp was built with its AMX kernels (``-march=native`` on an
    Intel CPU with AMX, e.g. Sapphire Rapids): they segfault on quantised models' first token
    (llama.cpp #20824; SmolLM2 Q4_1 and Gemma 3 Q4_K_M here, in llama-cpp-python 0.3.36)."""
    try:
        import llama_cpp

        return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace")
    except Exception:  # no llama_cpp: nothing is loaded in-process anyway
        return False


def default_extra_bufts() -> bool:
    """``runtime.use_extra_bufts`` left unset: llama.cpp's extra buffers on (its default),
    off with a build that has AMX kernels, which would use them and crash. Building without
    them (``CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"``, as CI
    does) keeps the repacked CPU kernels on."""
    return not amx_kernels()


def placement(n_gpu_layers: int, n_layers: int | None) -> str:
    """Where a model runs, for traces and tables: "CPU", "GPU 12/24 layers", "GPU all layers"."""
    if n_gpu_layers == 0:
        return "CPU"
    if n_layers:
        offloaded = n_layers if n_gpu_layers < 0 else min(n_gpu_layers, n_layers)
        return f"GPU {offloaded}/{n_layers} layers"
    return "GPU all layers" if n_gpu_layers < 0 else f"GPU {n_gpu_layers} layers"
