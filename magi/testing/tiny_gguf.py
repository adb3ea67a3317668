"""Tiny, valid llama-architecture GGUF models for tests, written in milliseconds.

Real weights cannot be downloaded here, yet discovery, the registry and the runtime
must be tested on files llama.cpp really loads. :func:`write_tiny_model` writes a
2-layer, 64-dimension llama model (about 0.5 MB, an SPM vocabulary of single
printable characters with byte fallback) whose *metadata* imitates any family:
``general.name``, ``general.basename``, ``general.size_label`` and
``general.file_type`` are what discovery reads, so a tiny file labelled ``4B`` /
``Q4_K_M`` gets the same model id as the real Qwen3-4B file.

With ``chat_template=`` (:data:`TINY_CHAT_TEMPLATE`, written by
:func:`write_chat_model`) the file carries ``tokenizer.chat_template`` and the
template's special tokens (:data:`CHAT_TOKENS`, CONTROL tokens, ``<|im_end|>`` the EOS),
so llama-cpp-python takes its chat-template path (``Jinja2ChatFormatter``) as it does
for a real instruct model. The template is ChatML-like but not llama-cpp-python's
``chatml`` text, so it is not mapped to the registered format: the GGUF's own template
is what renders.

Two behaviours:

* default: random weights; output rows of the control and byte tokens are zero, so
  greedy decoding always emits printable characters (never end-of-sequence): a
  completion of ``max_tokens`` tokens is guaranteed.
* ``echo=True``: ``attn_output`` and ``ffn_down`` are zero and there is no
  ``output.weight`` (tied, unit-norm embeddings), so the hidden state is the current
  token's embedding and greedy decoding repeats the last prompt token forever:
  ``"Hello"`` continues ``"ooooo"``. Use :func:`echo_completion` for the expectation.

What llama.cpp needs (checked with llama-cpp-python 0.3.36): the ``llama.*`` keys
written below, tokenizer model ``llama`` with ``<unk>``, ``<s>``, ``</s>``,
``<0x00>``..``<0xFF>`` (type BYTE), ``▁`` and printable characters, and exactly the
tensor set of :func:`_tensor_shapes`. Keep ``n_ctx`` at or below ``context_length``.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> path = write_tiny_model(folder / "Qwen3-4B-Q4_K_M.gguf", name="Qwen3 4B",
    ...                         basename="Qwen3", size_label="4B", file_type="Q4_K_M")
    >>> path.stat().st_size < 1_000_000
    True
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

ARCH = "llama"
SPACE = "\u2581"  # SentencePiece's word-boundary marker "▁"
CONTROL_TOKENS = ("<unk>", "<s>", "</s>")
PRINTABLE = [c for c in string.printable if not c.isspace()]  # 94 characters, 0x21..0x7E

MetadataValue = str | int | float | bool

#: The special tokens of :data:`TINY_CHAT_TEMPLATE` (CONTROL tokens; ``<|im_end|>`` is the EOS).
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
#: A small ChatML-like chat template (a BOS of its own, every role, the generation prompt).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Metadata of one tiny stand-in model: what discovery will read from it.

    ``size_label`` and ``file_type`` decide the model id and tier, so a spec with
    ``size_label="8B"`` stands in for an 8-billion-parameter model.
    """

    filename: str
    name: str | None
    basename: str | None
    size_label: str | None
    file_type: str | int | None = "Q4_K_M"
    finetune: str | None = None
    context_length: int = 4096


#: The seed's three models (``conf/profile/*.yaml``), with the metadata the real
#: files carry, keyed by the id discovery derives for them.
SEED_MODELS: dict[str, TinyModelSpec] = {
    "qwen3_4p0b_q4km_fast": TinyModelSpec(
        filename="Qwen3-4B-Q4_K_M.gguf",
        name="Qwen3 4B",
        basename="Qwen3",
        size_label="4B",
    ),
    "deepseek_r10528qwen3_8p0b_q4km_powerful": TinyModelSpec(
        filename="DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf",
        name="Deepseek-R1-0528-Qwen3-8B",
        basename="Deepseek-R1-0528-Qwen3",
        size_label="8B",
    ),
    "qwen2_coder_p5_14p0b_q4km_powerful": TinyModelSpec(
        filename="Qwen2.5-Coder-14B-Instruct-Q4_K_M.gguf",
        name="Qwen2.5 Coder 14B Instruct",
        basename="Qwen2.5-Coder",
        size_label="14B",
        finetune="Instruct",
    ),
}


def vocabulary(special_tokens: tuple[str, ...] = ()) -> tuple[list[str], list[int]]:
    """Tokens and token types of the tiny SPM vocabulary (354 tokens), with
    ``special_tokens`` as further CONTROL tokens after ``</s>`` (ids 3, 4, ...)."""
    tokens = [*CONTROL_TOKENS, *special_tokens]
    types = [
        TokenType.UNKNOWN,
        TokenType.CONTROL,
        TokenType.CONTROL,
        *[TokenType.CONTROL] * len(special_tokens),
    ]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    tokens += [SPACE, *PRINTABLE]
    types += [TokenType.NORMAL] * (1 + len(PRINTABLE))
    return tokens, [int(t) for t in types]


def _file_type_value(file_type: str | int) -> int:
    """``"Q4_K_M"``/``"q4_k_m"``/``15``/``LlamaFileType.MOSTLY_Q4_K_M`` → ``15``."""
    if isinstance(file_type, int):
        return int(LlamaFileType(file_type))
    key = file_type.strip().upper()
    for prefix in ("MOSTLY_", "ALL_", ""):
        member = LlamaFileType.__members__.get(prefix + key)
        if member is not None:
            return int(member)
    valid = sorted(m.removeprefix("MOSTLY_").removeprefix("ALL_") for m in LlamaFileType.__members__)
    raise ValueError(f"unknown file_type {file_type!r}; valid: {', '.join(valid)}")


def _tensor_shapes(
    n_vocab: int, n_embd: int, n_ff: int, n_layer: int, n_embd_kv: int, tied: bool
) -> dict[str, tuple[int, ...]]:
    """The exact tensor set llama.cpp's llama architecture requires (numpy shapes)."""
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_vocab, n_embd),
        "output_norm.weight": (n_embd,),
    }
    if not tied:
        shapes["output.weight"] = (n_vocab, n_embd)
    for i in range(n_layer):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_embd, n_embd),
            f"blk.{i}.attn_k.weight": (n_embd_kv, n_embd),
            f"blk.{i}.attn_v.weight": (n_embd_kv, n_embd),
            f"blk.{i}.attn_output.weight": (n_embd, n_embd),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": (n_embd, n_ff),
        }
    return shapes


def _weights(
    name: str, shape: tuple[int, ...], *, echo: bool, n_special: int, rng: np.random.Generator
) -> np.ndarray:
    if len(shape) == 1:  # norms
        return np.ones(shape, dtype=np.float32)
    if echo and (name.endswith("attn_output.weight") or name.endswith("ffn_down.weight")):
        return np.zeros(shape, dtype=np.float32)
    data = rng.standard_normal(shape).astype(np.float32) / math.sqrt(shape[1])
    if name == "token_embd.weight" and echo:
        # Unit rows: with tied output, a token's own logit is the unique maximum.
        data /= np.linalg.norm(data, axis=1, keepdims=True)
    if name == "output.weight":
        data[:n_special] = 0.0  # control + byte tokens: logit 0, below the best printable one
    return data


def write_tiny_model(
    path: Path | str,
    *,
    name: str | None = "Tiny Llama",
    basename: str | None = "Tiny-Llama",
    size_label: str | None = None,
    file_type: str | int | None = "Q4_K_M",
    context_length: int = 4096,
    finetune: str | None = None,
    echo: bool = False,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    shards: int = 1,
    metadata: Mapping[str, MetadataValue] | None = None,
    chat_template: str | None = None,
    special_tokens: tuple[str, ...] = (),
    eos_token: str = "</s>",
) -> Path:
    """Write a tiny llama GGUF model that llama-cpp-python loads and runs.

    Args:
        path: Target ``.gguf`` file. With ``shards > 1`` the files are named like
            llama.cpp's ``gguf-split`` does: ``<stem>-00001-of-0000N.gguf``.
        name, basename, size_label, finetune: ``general.*`` metadata; ``None`` omits
            the key (discovery then falls back to the file name / tensor count).
        file_type: ``general.file_type`` as a name (``"Q4_K_M"``) or number; ``None``
            omits it. The tensors are F32 regardless: only the label changes.
        context_length: ``llama.context_length``; load with ``n_ctx`` at most this.
        echo: Write the echo variant (greedy output repeats the last prompt token).
        seed: Seed of the random weights (same seed, same bytes).
        n_layer, n_embd, n_head, n_head_kv, n_ff: Shape; defaults give about 0.5 MB.
        shards: Split the tensors over this many files.
        metadata: Extra KV pairs (str, int, float or bool), e.g. ``{"general.type": "adapter"}``.
        chat_template: ``tokenizer.chat_template`` (a Jinja chat template); None: none.
        special_tokens: Extra CONTROL tokens (a chat template's), never generated.
        eos_token: The end-of-sequence token (``</s>`` or one of ``special_tokens``).

    Returns:
        The path of the model (the first shard when split).
    """
    path = Path(path)
    if path.suffix != ".gguf":
        raise ValueError(f"tiny model path must end in .gguf: {path}")
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must be a multiple of n_head, and n_head of n_head_kv")
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types = vocabulary(special_tokens)
    n_special = len(CONTROL_TOKENS) + len(special_tokens) + 256
    n_embd_kv = n_embd // n_head * n_head_kv
    shapes = _tensor_shapes(len(tokens), n_embd, n_ff, n_layer, n_embd_kv, tied=echo)
    per_shard = math.ceil(len(shapes) / shards) if shards > 1 else 0

    writer = GGUFWriter(path, ARCH, split_max_tensors=per_shard)
    if "general.type" not in (metadata or {}):
        writer.add_type("model")
    for key, value in (
        ("name", name),
        ("basename", basename),
        ("size_label", size_label),
        ("finetune", finetune),
    ):
        if value is not None:
            writer.add_string(f"general.{key}", value)
    if file_type is not None:
        writer.add_file_type(_file_type_value(file_type))
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(tokens.index(eos_token))
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for key, value in (metadata or {}).items():
        _add_metadata(writer, key, value)

    rng = np.random.default_rng(seed)
    for tensor_name, shape in shapes.items():
        writer.add_tensor(tensor_name, _weights(tensor_name, shape, echo=echo, n_special=n_special, rng=rng))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)[0]


def _add_metadata(writer: GGUFWriter, key: str, value: MetadataValue) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value) if value >= 0 else writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        writer.add_string(key, str(value))


#: What makes a tiny model a chat model: :data:`TINY_CHAT_TEMPLATE` and its special tokens.
CHAT_MODEL: dict[str, object] = {
    "chat_template": TINY_CHAT_TEMPLATE,
    "special_tokens": CHAT_TOKENS,
    "eos_token": "<|im_end|>",
}


def write_chat_model(path: Path | str, **kwargs: object) -> Path:
    """A tiny model with :data:`TINY_CHAT_TEMPLATE` and its special tokens (random weights
    by default: greedy answers never end early). ``kwargs`` go to :func:`write_tiny_model`."""
    defaults: dict[str, object] = {
        "name": "Tiny Chat",
        "basename": "Tiny-Chat",
        "size_label": "1B",
        "finetune": "Instruct",
        **CHAT_MODEL,
    }
    return write_tiny_model(path, **{**defaults, **kwargs})  # type: ignore[arg-type]


def write_spec(
    folder: Path | str,
    spec: TinyModelSpec,
    *,
    echo: bool = False,
    seed: int = 0,
    shards: int = 1,
    **extra: object,
) -> Path:
    """Write the tiny stand-in described by ``spec`` into ``folder``; ``extra`` goes to
    :func:`write_tiny_model` (``**CHAT_MODEL`` makes it a chat model, say)."""
    return write_tiny_model(
        Path(folder) / spec.filename,
        name=spec.name,
        basename=spec.basename,
        size_label=spec.size_label,
        file_type=spec.file_type,
        finetune=spec.finetune,
        context_length=spec.context_length,
        echo=echo,
        seed=seed,
        shards=shards,
        **extra,  # type: ignore[arg-type]
    )


#: The bundled demo pair (:data:`magi.models.demo.DEMO_MODELS`), with the metadata the real
#: files carry, keyed by the id discovery derives for them; SmolLM2 is a chat model.
DEMO_STAND_INS: dict[str, TinyModelSpec] = {
    "smollm2_135m_q41_fast": TinyModelSpec(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        name="Smollm2 135M 8k Lc100K Mix1 Ep2",
        basename="smollm2",
        size_label="135M",
        file_type="Q4_1",
        finetune="8k-lc100k-mix1-ep2",
        context_length=8192,
    ),
    "gemma3_270m_q4km_fast": TinyModelSpec(
        filename="gemma-3-270m-q4_k_m.gguf",
        name="Gemma 3 270m",
        basename="gemma-3",
        size_label="270M",
        context_length=32768,
    ),
}


def make_demo_stand_ins(folder: Path | str) -> dict[str, Path]:
    """Write tiny stand-ins of the demo pair (same ids, SmolLM2 with a chat template), so
    the ``demo`` profiles run on tiny models; returns ``{model_id: path}``."""
    return {
        model_id: write_spec(folder, spec, seed=10 + i, **(CHAT_MODEL if "smollm2" in model_id else {}))
        for i, (model_id, spec) in enumerate(DEMO_STAND_INS.items())
    }


def make_seed_models(folder: Path | str, *, echo: bool = False) -> dict[str, Path]:
    """Write tiny stand-ins of the seed's three models; returns ``{model_id: path}``.

    Discovery over ``folder`` yields exactly these ids (with the default tier
    thresholds), so the shipped profiles ``development``, ``production`` and
    ``fast-only`` validate against the registry and can run on them.
    """
    return {
        model_id: write_spec(folder, spec, echo=echo, seed=i)
        for i, (model_id, spec) in enumerate(SEED_MODELS.items())
    }


def echo_completion(prompt: str, n_tokens: int) -> str:
    """The text an echo model generates greedily: its last prompt character, repeated.

    The prompt's last token is its last character (every token is one character;
    a space is ``▁``, which decodes to a space). Only prompts of printable ASCII and
    spaces are predictable this way.
    """
    if not prompt:
        raise ValueError("an echo model needs a non-empty prompt")
    last = prompt[-1]
    if last not in PRINTABLE and last != " ":
        raise ValueError(f"prompt must end in a printable ASCII character or a space, not {last!r}")
    return last * n_tokens
