"""The in-process backend: one GGUF model loaded through ``llama_cpp.Llama``.

Defaults beat llama-cpp-python's own where they matter on a small CPU machine:
all cores instead of half, ``verbose=False`` with llama.cpp's log routed to Python
logging (``magi.llama_cpp`` at DEBUG) instead of stderr, ``n_ctx`` capped at the
model's trained context, a fixed seed, and greedy sampling unless configured.

A ``Llama`` object is not thread-safe: the pool holds one lock per model and only
one generation runs on a backend at a time.

Two process-wide hazards are handled here:

* llama-cpp-python's ``verbose=False`` silences a load by pointing file descriptors 1
  and 2 at ``/dev/null`` and back (``llama_cpp._utils.suppress_stdout_stderr``). Two
  loads at once interleave those swaps, and the second one "restores" the first
  one's ``/dev/null``: stdout is lost for good. Every ``Llama`` construction holds
  :data:`FD_SWAP_LOCK`, so the swaps never overlap (closing a model swaps nothing).
* A loaded model's file is memory-mapped: truncating it in place kills the process
  with SIGBUS, overwriting it serves garbage. The file's identity (size, mtime,
  inode, device) is recorded at load and compared before every generation and in
  :meth:`LlamaBackend.probe`; a changed file is closed and reloaded when it is a
  valid GGUF again (replaced by rename), else the model fails with a message that
  says how to replace models safely. ``use_mmap: false`` copies the weights into
  memory instead, for files that must be modified in place.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from magi.errors import ModelError
from magi.runtime.backend import BackendError, GenerationSettings, ModelSpec, PromptTooLongError

logger = logging.getLogger(__name__)
_llama_logger = logging.getLogger("magi.llama_cpp")
_log_lock = threading.Lock()
_log_callback: Any = None
GGML_LOG_LEVEL_ERROR = 4
#: llama.cpp's latest error messages (a load failure says only "Failed to create
#: llama_context"; the reason, e.g. a KV cache type the model's heads do not fit, is here).
_recent_errors: collections.deque[str] = collections.deque(maxlen=4)

#: Held around every llama-cpp-python call that swaps file descriptors 1 and 2
#: (``Llama(..., verbose=False)``): the swaps are not thread-safe (see the module docstring).
FD_SWAP_LOCK = threading.Lock()

#: Texts whose tokens a backend remembers (:meth:`LlamaBackend.tokens`): a refine tries
#: a few shortened drafts before the one it sends.
_TOKENISED_TEXTS = 4

REPLACE_BY_RENAME = (
    "replace a model file by writing the new file next to it and renaming it over the old "
    "one (mv new.gguf old.gguf), never by writing into it; set runtime.use_mmap=false "
    "(or runtime.models.<id>.use_mmap=false) if a file must be modified in place"
)


class FileIdentity(NamedTuple):
    """What tells a model file from a changed or replaced one, without reading it."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        """The identity of ``path`` now; None when it cannot be stat'ed (deleted, say)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def quiet_llama_logs() -> None:
    """Route llama.cpp's C-level log to the ``magi.llama_cpp`` Python logger (DEBUG).

    llama-cpp-python prints some of llama.cpp's messages to stderr even with
    ``verbose=False``; MAGI keeps the terminal and notebooks clean instead.
    """
    global _log_callback
    with _log_lock:
        if _log_callback is not None:
            return
        import llama_cpp

        @llama_cpp.llama_log_callback
        def _forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if level == GGML_LOG_LEVEL_ERROR:
                _recent_errors.append(text.decode("utf-8", errors="replace").strip())
            if _llama_logger.isEnabledFor(logging.DEBUG):
                _llama_logger.debug(text.decode("utf-8", errors="replace").rstrip())

        _log_callback = _forward  # keep a reference: ctypes must not free it
        llama_cpp.llama_log_set(_forward, ctypes.c_void_p(0))


@contextlib.contextmanager
def prompt_lookup(llm: Any, num_pred_tokens: int) -> Iterator[None]:
    """Prompt-lookup decoding on ``llm`` for one generation (0: leave it off).

    ``Llama(draft_model=...)`` would turn it on for every call and force ``logits_all``
    for the model's life: every stage (a draft on the same model too) would compute and
    copy the logits of every prompt token (262k floats a token on Gemma 3), and the
    ``scores`` array grows to ``n_ctx`` rows. ``generate()`` reads ``llm.draft_model`` on
    each step and verifies drafted tokens only with logits for every batch position, so
    one call sets the draft model, ``_logits_all`` and a full-size ``scores`` array, and
    puts the model's own back afterwards (the caller holds the model's lease: no other
    generation sees the switch). The larger array is freed with the call.
    """
    if num_pred_tokens <= 0 or llm.draft_model is not None:
        yield
        return
    import numpy as np
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    saved = (llm._logits_all, llm.scores)
    llm.draft_model = LlamaPromptLookupDecoding(num_pred_tokens=num_pred_tokens)
    llm._logits_all = True
    llm.scores = np.ndarray((llm._n_ctx, llm._n_vocab), dtype=np.single)  # pages used as written
    try:
        yield
    finally:
        llm.draft_model = None
        llm._logits_all, llm.scores = saved


class LlamaBackend:
    """A GGUF model run in-process by llama.cpp; loaded on :meth:`load`."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._llm: Any = None
        self._chat: bool = False
        self._identity: FileIdentity | None = None  # of the file when it was loaded
        #: The last few texts tokenised, with their tokens (:meth:`tokens`). A stage counts
        #: its prompt to fit the context, llama.cpp processes it and the trace reports its
        #: size: one tokenisation serves all three. Cleared when the model is closed.
        self._tokenised: collections.OrderedDict[str, list[int]] = collections.OrderedDict()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        if self._llm is not None:
            return
        path = self.spec.path
        if path is None:
            raise ModelError(
                f"Model '{self.spec.model_id}' has no model file: a remote model runs on its server "
                "(RemoteBackend), not in-process."
            )
        if not path.is_file():
            raise ModelError(
                f"Model '{self.spec.model_id}': file not found: {path}. "
                "Run `magi discover` to refresh the registry, or fix models.dirs."
            )
        quiet_llama_logs()
        import llama_cpp

        identity = FileIdentity.of(path)  # before loading: a change during the load shows later
        try:
            with FD_SWAP_LOCK:  # loads run one at a time: the errors logged are this one's
                _recent_errors.clear()
                try:
                    self._llm = llama_cpp.Llama(**self.llama_kwargs())
                finally:
                    reasons = [e for e in _recent_errors if e]
        except (ValueError, RuntimeError, OSError) as exc:
            if reasons and "context" in str(exc):  # the file loaded; a load setting did not suit it
                raise ModelError(
                    f"Model '{self.spec.model_id}': llama.cpp could not set up {path} with its load "
                    f"settings ({exc}: {'; '.join(reasons)}). Change the setting named there "
                    f"(runtime.<name>, or runtime.models.{self.spec.model_id}.<name>: type_k/type_v, "
                    "flash_attn, n_ctx, n_batch/n_ubatch, n_gpu_layers, ...)."
                ) from None
            raise ModelError(
                f"Model '{self.spec.model_id}': llama.cpp could not load {path} "
                f"({exc}). The file may be truncated or not a GGUF model; re-download or "
                "regenerate it, then run `magi discover`."
            ) from None
        self._identity = identity
        has_template = "tokenizer.chat_template" in (self._llm.metadata or {})
        chat_format = self.spec.load.chat_format
        self._chat = chat_format != "completion" and (chat_format is not None or has_template)
        logger.info(
            "Loaded %s from %s (n_ctx=%d, threads=%s/%s, %s, %s)",
            self.spec.model_id,
            path,
            self.spec.n_ctx,
            self.spec.load.n_threads,
            self.spec.load.n_threads_batch,
            self.spec.placement,
            "chat" if self._chat else "completion",
        )

    def llama_kwargs(self) -> dict[str, Any]:
        """What ``llama_cpp.Llama(...)`` is called with: every load setting by its own name
        (:meth:`LoadSettings.llama_kwargs`), the file, the seed, and MAGI's quiet logging."""
        assert self.spec.path is not None
        return {
            **self.spec.load.llama_kwargs(),
            "model_path": str(self.spec.path),
            "seed": self.spec.sampling.seed,
            "verbose": False,
        }

    def _require(self) -> Any:
        """The loaded model, (re)loaded if needed. Called under the pool's lease, so it
        may close and reload a model whose file changed."""
        if self._llm is not None and self._file_changed():
            self._reload_changed_file()
        if self._llm is None:
            self.load()
        return self._llm

    def _file_changed(self) -> bool:
        path = self.spec.path
        return path is not None and FileIdentity.of(path) != self._identity

    def _changed_file_error(self, reason: str) -> BackendError:
        return BackendError(
            f"Model '{self.spec.model_id}': its file {self.spec.path} changed on disk after it was "
            f"loaded and is no longer a usable GGUF model ({reason}). To update a model, "
            f"{REPLACE_BY_RENAME}."
        )

    def _check_changed_file(self) -> None:
        """Raise if the file at the model's path is not a complete GGUF model (read only
        its header: the weights are not touched, so a truncated file cannot SIGBUS us)."""
        from magi.models.gguf_meta import GGUFReadError, read_header

        assert self.spec.path is not None
        try:
            read_header(self.spec.path)
        except GGUFReadError as exc:
            raise self._changed_file_error(exc.reason) from None

    def _reload_changed_file(self) -> None:
        """Close the model whose file changed before its mapped pages are touched again;
        load the new file when it is a valid GGUF (replaced by rename), else fail."""
        logger.warning(
            "Model '%s': %s changed on disk since it was loaded; closing it",
            self.spec.model_id,
            self.spec.path,
        )
        self.close()
        self._check_changed_file()
        try:
            self.load()
        except ModelError as exc:
            raise self._changed_file_error(str(exc)) from None
        logger.info("Model '%s': reloaded the new %s", self.spec.model_id, self.spec.path)

    def format_prompt(self, prompt: str, settings: GenerationSettings) -> str:
        """The text a completion-style model sees (chat models get messages instead)."""
        return settings.prompt_template.replace("{prompt}", prompt)

    def tokens(self, text: str) -> list[int]:
        """``text`` as the model's tokens, the way ``create_completion`` tokenises a prompt
        (BOS added if the model wants one, special tokens parsed), remembered for the next
        few calls: a stage tokenises its prompt once, and llama.cpp is given these tokens."""
        llm = self._require()
        cached = self._tokenised.get(text)
        if cached is None:
            cached = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            self._tokenised[text] = cached
            while len(self._tokenised) > _TOKENISED_TEXTS:
                self._tokenised.popitem(last=False)
        else:
            self._tokenised.move_to_end(text)
        return cached

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def count_prompt_tokens(self, prompt: str, settings: GenerationSettings) -> int:
        """The prompt as the model sees it: templated for completion-style models. A chat
        model's template adds a few tokens that are not counted here (llama.cpp applies it)."""
        self._require()
        return self.count_tokens(prompt if self._chat else self.format_prompt(prompt, settings))

    def _check_fits(self, prompt_tokens: int) -> None:
        if prompt_tokens >= self.spec.n_ctx:
            raise PromptTooLongError(
                f"The prompt has {prompt_tokens} tokens but model '{self.spec.model_id}' runs with "
                f"n_ctx={self.spec.n_ctx}; shorten the prompt or raise runtime.n_ctx "
                f"(the model allows {self.spec.context_length or 'unknown'})."
            )

    def stream(self, prompt: str, settings: GenerationSettings) -> Iterator[str]:
        llm = self._require()
        # every sampling setting by its own name (SamplingSettings.llama_kwargs)
        kwargs: dict[str, Any] = {**settings.llama_kwargs(), "stream": True}
        self._check_fits(self.count_prompt_tokens(prompt, settings))
        with prompt_lookup(llm, settings.prompt_lookup):
            yield from self._generate(llm, prompt, settings, kwargs)

    def _generate(
        self, llm: Any, prompt: str, settings: GenerationSettings, kwargs: dict[str, Any]
    ) -> Iterator[str]:
        try:
            if self._chat:
                messages = [{"role": "user", "content": prompt}]
                for chunk in llm.create_chat_completion(messages=messages, **kwargs):
                    delta = chunk["choices"][0].get("delta", {})
                    if "content" in delta:  # the first chunk carries only the role
                        yield delta["content"] or ""
            else:
                # the tokens counted above: llama.cpp does not tokenise the text again
                tokens = self.tokens(self.format_prompt(prompt, settings))
                for chunk in llm.create_completion(tokens, **kwargs):
                    # One chunk per token ("" while a multi-byte character is incomplete),
                    # then a closing chunk with the finish reason and no text.
                    choice = chunk["choices"][0]
                    if choice["text"] or choice.get("finish_reason") is None:
                        yield choice["text"]
        except (ValueError, RuntimeError) as exc:
            if "exceed context window" in str(exc):  # the chat template made it too long
                raise PromptTooLongError(
                    f"Model '{self.spec.model_id}': {exc}; shorten the prompt or raise runtime.n_ctx "
                    f"(the model allows {self.spec.context_length or 'unknown'})."
                ) from None
            raise BackendError(f"Model '{self.spec.model_id}' failed to generate: {exc}") from exc

    def probe(self) -> None:
        """Healthy when loaded and able to tokenize; an unloaded model needs a GGUF file.

        A loaded model whose file changed is healthy only if the new file is a complete
        GGUF (its next generation reloads it). The probe runs without the pool's lease,
        so it never closes or reloads the model itself.
        """
        llm = self._llm
        if llm is not None and self._file_changed():
            self._check_changed_file()
            return
        if llm is None:
            if self.spec.path is None:
                raise BackendError(f"Model '{self.spec.model_id}' has no model file (a remote model?)")
            try:
                with self.spec.path.open("rb") as handle:
                    magic = handle.read(4)
            except OSError as exc:
                raise BackendError(
                    f"Model '{self.spec.model_id}': cannot read {self.spec.path}: {exc}"
                ) from None
            if magic != b"GGUF":
                raise BackendError(f"Model '{self.spec.model_id}': {self.spec.path} is not a GGUF file")
            return
        llm.tokenize(b"ping", add_bos=False, special=False)

    def close(self) -> None:
        llm, self._llm = self._llm, None
        self._identity = None
        self._tokenised.clear()  # a reloaded (replaced) file may tokenise differently
        if llm is not None:
            llm.close()
            logger.info("Closed %s", self.spec.model_id)
