"""Model ids in the seed's style: ``<family>_<size>_<quant>_<tier>``.

Profiles name models by id (``qwen3_4p0b_q4km_fast``), so an id must be derived
from a file the same way every time, read well, and be safe in YAML and Hydra
overrides: only lower-case letters, digits and ``_``.

The four parts
--------------

**family**, from ``general.basename``; else ``general.name`` up to its size word
(``"Qwen3 4B"`` → ``Qwen3``); else the file name without split suffix and
quantisation, up to its size word. The raw family is lower-cased and split into
words at ``-``, ``_`` and spaces:

1. the first word is the head; a version decimal in it moves to the end as
   ``p<digits>`` (the ``p`` stands for the point, as in the size):
   ``Qwen2.5`` → head ``qwen2``, suffix ``p5``;
2. purely numeric words right after the head join it (``gemma-3`` → ``gemma3``,
   ``Llama-3.1`` → ``llama3`` + ``p1``);
3. the remaining words are concatenated without separators as the variant
   (``R1-0528-Qwen3`` → ``r10528qwen3``).

The family is ``head[_variant][_p<decimal>]``:

=========================  ==================  =========================
general.basename           family              note
=========================  ==================  =========================
``Qwen3``                  ``qwen3``
``Deepseek-R1-0528-Qwen3`` ``deepseek_r10528qwen3``
``Qwen2.5-Coder``          ``qwen2_coder_p5``  the seed's own spelling
``gemma-3``                ``gemma3``          the demo model
``Llama-3.1``              ``llama3_p1``
=========================  ==================  =========================

**size**, from ``general.size_label`` (else a size word in the name or file name,
else the tensors' parameter count): billions and trillions with one decimal,
``p`` for the point (``4B`` → ``4p0b``, ``0.5B`` → ``0p5b``, ``14B`` → ``14p0b``);
millions and thousands as whole numbers (``270M`` → ``270m``). A mixture label
keeps its expert count (``8x7B`` → ``8x7p0b``); ``30B-A3B`` counts its total
(``30p0b``). The label wins over the tensor count because it is how people name
the model: DeepSeek-R1-0528-Qwen3-8B really has 8.19 B parameters, and the seed
calls it ``8p0b``.

**quant**, from ``general.file_type`` (``15`` = ``Q4_K_M`` → ``q4km``); else a
quantisation word in the file name; else the type holding most tensor bytes.

**tier**, from the parameter count and ``models.tier_thresholds`` (see
:mod:`magi.models.tiers`), or a pin.

Uniqueness
----------
Two files can derive the same id. They are told apart by what they are, never by
where they are, in three steps (each only among files that still share an id):

1. **variant**: ``general.finetune``; else the words after the size word in
   ``general.name``; else (no finetune, no name with a size word) the words after
   the size word in the file name, quantisation left out. ``Instruct`` → ``instruct``,
   ``it``, ``Base``, none → ``""``. When the variants differ, one variant keeps the
   plain id: the one whose file had it in the previous registry, else an
   instruction-tuned one (``instruct``, ``it``, ``chat``: what MAGI serves), else
   none, else the first alphabetically. The others get their variant after the
   size, ``base`` for none: ``llama3_p1_8p0b_base_q4km_powerful``.
2. **file name**: a file whose name names another family than its metadata (a
   renamed copy, ``my-assistant.gguf``) takes the family from its file name:
   ``my_assistant_4p0b_q4km_fast``; the file whose name agrees keeps the plain id.
3. **the same file twice** (two folders): the next free numeric suffix,
   ``qwen3_4p0b_q4km_fast_2``, ``_3``, ... in path order.

A file that already had an id in the previous registry keeps it (ids stay stable
across refreshes; a model joining later takes the variant or suffix). A pinned id
(``models.pins``) is always honoured; two pins asking for the same id are an error
naming both files.

Example:
    >>> family_token("Qwen2.5-Coder"), size_token_from_label("14B"), quant_token("Q4_K_M")
    ('qwen2_coder_p5', '14p0b', 'q4km')
    >>> make_id("qwen2_coder_p5", "14p0b", "q4km", "powerful")
    'qwen2_coder_p5_14p0b_q4km_powerful'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gguf import LlamaFileType

from magi.errors import ModelError
from magi.models.gguf_meta import GGUFModelInfo

_SIZE_WORD = re.compile(
    r"^(?:(?P<experts>\d+)x)?(?P<num>\d+(?:\.\d+)?)(?P<unit>[KMBT])(?:-A\d+(?:\.\d+)?[KMBT])?$", re.IGNORECASE
)
_UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
_SPLIT_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")
_QUANT_WORD = re.compile(
    r"(?:^|[-._ ])(?P<quant>(?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|FP16|FP32|TQ\d_\d|MXFP4(?:_MOE)?)$",
    re.IGNORECASE,
)
_WORD_SPLIT = re.compile(r"[-_\s/]+")
_NUMERIC = re.compile(r"^\d+(?:\.\d+)*$")


def quant_name_from_file_type(file_type: int | None) -> str | None:
    """``15`` → ``"Q4_K_M"``; ``None``/unknown/``GUESSED`` → ``None``."""
    if file_type is None:
        return None
    try:
        member = LlamaFileType(file_type)
    except ValueError:
        return None
    if member == LlamaFileType.GUESSED:
        return None
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def strip_split_suffix(stem: str) -> str:
    """``"Big-8B-Q4_K_M-00001-of-00003"`` → ``"Big-8B-Q4_K_M"``."""
    return _SPLIT_SUFFIX.sub("", stem)


def quant_from_filename(stem: str) -> str | None:
    """The quantisation word at the end of a file stem, upper-cased: ``"...-Q4_K_M"`` → ``"Q4_K_M"``."""
    match = _QUANT_WORD.search(strip_split_suffix(stem))
    return match.group("quant").upper() if match else None


def quant_token(quant: str) -> str:
    """``"Q4_K_M"`` → ``"q4km"``, ``"BF16"`` → ``"bf16"``."""
    return re.sub(r"[^a-z0-9]", "", quant.lower()) or "unknown"


def parse_size_label(label: str | None) -> float | None:
    """Parameter count a size label stands for: ``"4B"`` → 4e9, ``"8x7B"`` → 5.6e10; else ``None``."""
    if not label:
        return None
    match = _SIZE_WORD.match(label.strip())
    if not match:
        return None
    experts = int(match.group("experts") or 1)
    return experts * float(match.group("num")) * _UNITS[match.group("unit").upper()]


def _format_number(value: float, unit: str, *, whole: bool = False) -> str:
    """One decimal for B/T; whole numbers for M/K (a label's own decimal is kept unless ``whole``)."""
    if unit in ("B", "T"):
        text = f"{value:.1f}"
    else:
        text = f"{value:.0f}" if whole or abs(value - round(value)) < 0.05 else f"{value:.1f}"
    return text.replace(".", "p") + unit.lower()


def size_token_from_label(label: str) -> str | None:
    """``"4B"`` → ``"4p0b"``, ``"270M"`` → ``"270m"``, ``"8x7B"`` → ``"8x7p0b"``; ``None`` if unparsable."""
    match = _SIZE_WORD.match(label.strip())
    if not match:
        return None
    experts = f"{match.group('experts')}x" if match.group("experts") else ""
    return experts + _format_number(float(match.group("num")), match.group("unit").upper())


def size_token_from_count(params: int | float) -> str:
    """A parameter count as a size token: 4.02e9 → ``"4p0b"``, 2.7e8 → ``"270m"``, 119360 → ``"119k"``."""
    for unit in ("T", "B", "M"):
        if params >= _UNITS[unit]:
            return _format_number(params / _UNITS[unit], unit, whole=True)
    return _format_number(max(params, 1) / 1e3, "K", whole=True)


def find_size_word(text: str) -> tuple[str, str] | None:
    """Split ``text`` at its first size word: ``"Qwen3 4B"`` → ``("Qwen3", "4B")``."""
    words = [w for w in _WORD_SPLIT.split(text) if w]
    for i, word in enumerate(words):
        if _SIZE_WORD.match(word):
            return "-".join(words[:i]), word
    return None


def family_token(raw: str) -> str:
    """The id's family part from a raw family name (rules in the module docstring)."""
    words = [w for w in _WORD_SPLIT.split(raw.strip().lower()) if w]
    if not words:
        return "model"
    head, decimal = _split_decimal(words[0])
    rest = words[1:]
    while rest and not decimal and _NUMERIC.match(rest[0]):
        number, decimal = _split_decimal(rest.pop(0))
        head += number
    variant = "".join(re.sub(r"[^a-z0-9]", "", w) for w in rest)
    parts = [re.sub(r"[^a-z0-9]", "", head) or "model"]
    if variant:
        parts.append(variant)
    if decimal:
        parts.append(f"p{decimal}")
    return "_".join(parts)


def _split_decimal(word: str) -> tuple[str, str]:
    """``"qwen2.5"`` → ``("qwen2", "5")``; ``"3.1"`` → ``("3", "1")``; no dot → ``(word, "")``."""
    if "." not in word:
        return word, ""
    head, _, tail = word.partition(".")
    digits = re.sub(r"[^0-9]", "", tail)
    return head, digits


def make_id(family: str, size: str, quant: str, tier: str) -> str:
    """Join the four parts: ``make_id("qwen3", "4p0b", "q4km", "fast")`` → ``"qwen3_4p0b_q4km_fast"``."""
    return f"{family}_{size}_{quant}_{tier.lower()}"


@dataclass(frozen=True)
class IdParts:
    """The parts a derived id is made of, and what tells models of one id apart."""

    family: str
    size: str
    quant: str  # the id token, e.g. q4km
    tier: str
    variant: str = ""  # e.g. instruct, it, base; "" when nothing says
    file_family: str | None = None  # the family the file name alone gives

    def with_variant(self) -> str:
        """The id with the variant after the size (``base`` when there is none)."""
        return make_id(self.family, f"{self.size}_{self.variant or 'base'}", self.quant, self.tier)

    def with_file_family(self, wanted: str) -> str:
        """``wanted`` (a derived id, so it starts with the family) with the file name's family."""
        return f"{self.file_family}{wanted.removeprefix(self.family)}"


@dataclass(frozen=True)
class IdClaim:
    """One model asking for an id: ``wanted`` (derived or pinned) and the previous id if any.

    ``parts`` (derived ids only) lets models that derive the same id be told apart
    by variant and file name rather than by path order.
    """

    key: str  # the model's path, for ordering and messages
    wanted: str
    pinned: bool = False
    previous: str | None = None
    parts: IdParts | None = None


#: Variants of instruction-tuned models: in a clash they keep the plain id.
CHAT_VARIANTS = ("instruct", "it", "chat")


def _keeper_variant(group: Sequence[IdClaim]) -> str:
    """The variant that keeps the plain id among claims of one id (step 1 of the docstring)."""
    variants = {c.parts.variant for c in group if c.parts}
    for claim in group:
        if claim.previous == claim.wanted and claim.parts:
            return claim.parts.variant
    for chat in CHAT_VARIANTS:
        if chat in variants:
            return chat
    chatty = sorted(v for v in variants if any(w in v for w in CHAT_VARIANTS))
    if chatty:
        return chatty[0]
    return "" if "" in variants else sorted(variants)[0]


def _tell_apart(claims: list[IdClaim]) -> list[IdClaim]:
    """Steps 1 and 2 of the docstring: re-aim claims of a shared id by variant, then file name."""
    from dataclasses import replace

    def groups(items: list[IdClaim]) -> dict[str, list[IdClaim]]:
        out: dict[str, list[IdClaim]] = {}
        for c in items:
            out.setdefault(c.wanted, []).append(c)
        return out

    step1: list[IdClaim] = []
    for group in groups(claims).values():
        variants = {c.parts.variant for c in group if c.parts}
        if len(group) < 2 or len(variants) < 2:
            step1.extend(group)
            continue
        keeper = _keeper_variant(group)
        for c in group:
            if c.parts and c.parts.variant != keeper:
                c = replace(c, wanted=c.parts.with_variant())
            step1.append(c)
    step2: list[IdClaim] = []
    for group in groups(step1).values():
        for c in group:
            p = c.parts
            renamed = p is not None and p.file_family is not None and p.file_family != p.family
            if len(group) > 1 and renamed and c.previous != c.wanted and p is not None:
                c = replace(c, wanted=p.with_file_family(c.wanted))
            step2.append(c)
    return step2


def assign_unique_ids(claims: Sequence[IdClaim]) -> dict[str, str]:
    """Give every claim a unique id; returns ``{key: id}`` (rules in the module docstring).

    Raises:
        ModelError: two pins ask for the same id (422), naming both files.
    """
    result: dict[str, str] = {}
    taken: dict[str, str] = {}
    for claim in sorted((c for c in claims if c.pinned), key=lambda c: c.key):
        if claim.wanted in taken:
            raise ModelError(
                f"Two pins in models.pins ask for the model id '{claim.wanted}': {taken[claim.wanted]} and "
                f"{claim.key}. Pin a different id for one of them.",
                details={"id": claim.wanted, "files": [taken[claim.wanted], claim.key]},
            )
        taken[claim.wanted] = claim.key
        result[claim.key] = claim.wanted
    derived = sorted(_tell_apart([c for c in claims if not c.pinned]), key=lambda c: c.key)
    waiting: list[IdClaim] = []
    for claim in derived:  # keep last registry's id when it still fits this model
        prev = claim.previous
        fits = prev is not None and (
            prev == claim.wanted or re.fullmatch(re.escape(claim.wanted) + r"_\d+", prev)
        )
        if fits and prev not in taken:
            taken[prev] = claim.key
            result[claim.key] = prev
        else:
            waiting.append(claim)
    for claim in waiting:
        candidate, n = claim.wanted, 1
        while candidate in taken:
            n += 1
            candidate = f"{claim.wanted}_{n}"
        taken[candidate] = claim.key
        result[claim.key] = candidate
    return result


@dataclass(frozen=True)
class Identity:
    """The id parts derived from a model's metadata and file name (tier aside)."""

    family: str
    size: str
    quant: str | None
    params: int
    params_source: str  # size_label, name, filename or tensors
    variant: str = ""  # finetune, else words after the size in the name, else in the file name
    file_family: str = "model"  # the family the file name alone gives (tells renamed copies apart)


def derive_identity(info: GGUFModelInfo, filename: str) -> Identity:
    """Family, size and quantisation of a model, by the rules of this module's docstring.

    ``filename`` is the (first shard's) file name; it is the fallback for every part.
    """
    stem = strip_split_suffix(Path(filename).stem)
    file_quant = quant_from_filename(stem)
    stem_wo_quant = stem
    if file_quant:
        stem_wo_quant = re.sub(r"[-._ ]?" + re.escape(file_quant) + r"$", "", stem, flags=re.IGNORECASE)
    name_split = find_size_word(info.name) if info.name else None
    file_split = find_size_word(stem_wo_quant)

    if info.basename:
        raw_family = info.basename
    elif name_split and name_split[0]:
        raw_family = name_split[0]
    elif info.name and not name_split:
        raw_family = info.name
    elif file_split and file_split[0]:
        raw_family = file_split[0]
    else:
        raw_family = stem_wo_quant

    size, params, source = None, None, "tensors"
    for label, where in (
        (info.size_label, "size_label"),
        (name_split and name_split[1], "name"),
        (file_split and file_split[1], "filename"),
    ):
        if label and parse_size_label(label):
            size, params, source = size_token_from_label(label), parse_size_label(label), where
            break
    if size is None or params is None:
        size, params = size_token_from_count(info.tensor_params), float(info.tensor_params)

    quant = quant_name_from_file_type(info.file_type) or file_quant or info.dominant_tensor_type
    if info.finetune:
        variant = variant_token(info.finetune)
    elif name_split:
        variant = variant_token(_after_size_word(info.name or ""))
    else:
        variant = variant_token(_after_size_word(_QUANT_ANYWHERE.sub("", stem)))
    return Identity(
        family=family_token(raw_family),
        size=size,
        quant=quant,
        params=int(params),
        params_source=source,
        variant=variant,
        file_family=family_token(file_split[0] if file_split and file_split[0] else stem_wo_quant),
    )


_QUANT_ANYWHERE = re.compile(
    r"(?:^|[-._ ])(?:I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32|FP16|FP32|TQ\d_\d|MXFP4(?:_MOE)?)(?=$|[-._ ])",
    re.IGNORECASE,
)


def _after_size_word(text: str) -> str:
    """The words after the first size word: ``"Qwen2.5 Coder 14B Instruct"`` → ``"Instruct"``."""
    words = [w for w in _WORD_SPLIT.split(text) if w]
    for i, word in enumerate(words):
        if _SIZE_WORD.match(word):
            return "-".join(words[i + 1 :])
    return ""


def variant_token(raw: str) -> str:
    """A variant as an id token: ``"Instruct"`` → ``"instruct"``, ``"Code-Pro"`` → ``"codepro"``.

    Lower-cased, every character but letters and digits dropped.
    """
    return re.sub(r"[^a-z0-9]", "", raw.lower())
