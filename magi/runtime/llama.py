"""The in-process backend: one GGUF model loaded through ``llama_cpp.Llama``.

Defaults beat llama-cpp-python's own where they matter on a small CPU machine:
the usable cores less one for decode and prompts (:func:`magi.runtime.resolve.default_threads`)
instead of half for decode, ``verbose=False`` with llama.cpp's log routed to Python
logging (``magi.llama_cpp`` at DEBUG) instead of stderr, ``n_ctx`` capped at the
model's trained context, a fixed seed, and greedy sampling unless configured.

A ``Llama`` object is not thread-safe: the pool holds one lock per model and only
one generation runs on a backend at a time.

A request is a conversation (:class:`~magi.conversation.Conversation`; a plain string is
one user message). It is rendered once (:mod:`magi.runtime.templates`: the model's chat
template through llama-cpp-python's own formatter, or MAGI's completion transcript),
tokenised once (:meth:`LlamaBackend.tokens`), counted, and llama.cpp is handed the
tokens through ``create_completion``: prompt-token counts are what llama.cpp processes,
the template's tokens included, for chat and completion models alike.

**Conversation states.** llama.cpp re-uses the longest common prefix of the tokens it
processed last, so a conversation's next turn processes only what is new. When two
conversations alternate on one model, each would start over; :class:`StateCache` keeps
the model's states (KV cache), up to ``state_cache_mb``, and restores the one sharing the
longest prefix with the next prompt when it beats the live state. A conversation in
progress (one with history) is saved as its answer ends, after the last token, so switching
back to it costs a restore only; any other prompt's state (a one-off question, a first turn)
is saved only when the next prompt on that model would overwrite it, so a single answer
copies nothing. It is MAGI's own rather than ``llama_cpp.LlamaRAMCache``: llama-cpp-python's
streaming path saves the state only after the closing chunk (an answer the runner ends
early, by a stop, the budget or cancelling, is never saved), and its ``save_state``
copies ``scores[:n_tokens]``, up to ``n_batch`` x ``n_vocab`` floats (512 MB a state on
Gemma 3's 262k vocabulary) that sampling does not use without ``logits_all`` and that
``LlamaRAMCache``'s capacity does not count. Measured on Gemma 3 270M after a
1,166-token prompt: ``save_state`` took 2.3 s and held 512 MB of scores beside the
20.6 MB llama.cpp state; :meth:`StateCache.save` takes 0.06 s and 20.6 MB, a restore
0.05 s.

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

from jinja2 import TemplateError

from magi.conversation import Conversation, as_conversation
from magi.errors import ModelError
from magi.runtime.backend import BackendError, GenerationSettings, ModelSpec, PromptTooLongError
from magi.runtime.templates import ChatTemplate, RenderedPrompt, render_transcript

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
def model_params(use_extra_bufts: bool | None) -> Iterator[None]:
    """Within it, ``Llama(...)`` loads with ``use_extra_bufts`` (None: llama.cpp's default).

    ``Llama`` takes no such argument: its constructor starts from
    ``llama_model_default_params()``, which returns the setting here. Held under
    :data:`FD_SWAP_LOCK`, so no other MAGI load sees it; restored on the way out.
    """
    if use_extra_bufts is None:
        yield
        return
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params

    def with_setting() -> Any:
        params = defaults()
        params.use_extra_bufts = use_extra_bufts
        return params

    bindings.llama_model_default_params = with_setting
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


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


def common_prefix(a: Any, b: Any) -> int:
    """How many leading tokens two token sequences share (numpy, for long prompts)."""
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n], dtype=np.intc) != np.asarray(b[:n], dtype=np.intc))
    return int(differ[0]) if differ.size else n


class _SavedState(NamedTuple):
    tokens: Any  # numpy intc array: the tokens the state holds
    data: bytearray  # llama_state_get_data's bytes (writable: restored without a copy)
    prompt_tokens: int  # how many of them were the prompt of the generation that left it


#: Most saved states one model keeps (least recently used dropped first), whatever their
#: size: each next generation compares its prompt with every state (about 5 µs a state).
MAX_STATES = 64


class StateCache:
    """Saved llama.cpp states of one model, by the tokens each one holds, within a byte
    budget (least recently used dropped first). See the module docstring for why MAGI
    keeps its own.

    A state is llama.cpp's own (``llama_state_get_data``: the KV cache of the tokens
    processed, and the last logits), with those tokens. A new state supersedes an older
    one that it shares the older one's whole prompt with (the same conversation, a turn
    on): every prompt the older one would serve, the newer serves as far, so the older is
    dropped. ``hits`` counts restores; ``size_bytes`` is the memory the states take.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._states: collections.OrderedDict[bytes, _SavedState] = collections.OrderedDict()
        self.hits = 0
        #: The prompt length of the generation that left the live state (:meth:`left`).
        self._live_prompt = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def size_bytes(self) -> int:
        return sum(state.tokens.nbytes + len(state.data) for state in self._states.values())

    def left(self, prompt_tokens: int) -> None:
        """After a generation (finished or ended early) whose prompt was ``prompt_tokens``
        long: the live state is its, saved by :meth:`restore` if another prompt comes."""
        self._live_prompt = prompt_tokens

    def restore(self, llm: Any, tokens: list[int]) -> int:
        """Before a generation on ``tokens``: save the live state if ``tokens`` does not
        continue it (it would be overwritten), then load the saved state sharing the
        longest prefix with them if it shares more than the live one. Returns the prefix
        length llama.cpp can re-use (the rest of the prompt is processed)."""
        import llama_cpp
        import numpy as np

        prompt = np.asarray(tokens, dtype=np.intc)  # once, not once per saved state
        live = common_prefix(llm._input_ids, prompt)
        best, chosen = live, None
        for key, saved in self._states.items():
            shared = common_prefix(saved.tokens, prompt)
            if shared > best:
                best, chosen = shared, key
        state = None
        if chosen is not None:
            state = self._states[chosen]
            self._states.move_to_end(chosen)  # used: the live state's save evicts others first
        if llm.n_tokens and live < min(self._live_prompt, llm.n_tokens):
            # another conversation: the live one's whole prompt is not this one's start, so
            # this generation overwrites it. (A live state whose prompt this one continues
            # needs no copy: the state this one leaves would supersede it, see save.)
            self.save(llm, self._live_prompt)
        if state is None:
            return live
        buffer = (ctypes.c_uint8 * len(state.data)).from_buffer(state.data)  # no copy
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, buffer, len(state.data)) != len(state.data):
            llm.reset()  # a partial restore: start over rather than trust the KV cache
            return 0
        llm.input_ids[: len(state.tokens)] = state.tokens
        llm.n_tokens = len(state.tokens)
        llm._requires_eval = True  # as Llama.load_state: replay a token for fresh logits
        self.hits += 1
        return best

    def save(self, llm: Any, prompt_tokens: int) -> None:
        """Keep ``llm``'s current state, left by a generation (finished or ended early)
        whose prompt was ``prompt_tokens`` long (:meth:`restore` calls it when needed)."""
        import llama_cpp

        n = llm.n_tokens
        if n == 0:
            return
        tokens = llm.input_ids[:n].copy()
        key = tokens.tobytes()
        if key in self._states:  # the same tokens: the same state
            self._states.move_to_end(key)
            return
        size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
        if size + tokens.nbytes > self.capacity_bytes:
            return
        data = bytearray(size)  # written in place: one copy of the state, not two
        view = (ctypes.c_uint8 * size).from_buffer(data)
        written = llama_cpp.llama_state_get_data(llm._ctx.ctx, view, size)
        del view  # releases the bytearray, so it can be cut to what was written
        del data[written:]
        superseded = [
            k for k, old in self._states.items() if common_prefix(old.tokens, tokens) >= old.prompt_tokens
        ]
        for old_key in superseded:
            del self._states[old_key]
        self._states[key] = _SavedState(tokens, data, min(prompt_tokens, n))
        while self.size_bytes > self.capacity_bytes or len(self._states) > MAX_STATES:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()


class LlamaBackend:
    """A GGUF model run in-process by llama.cpp; loaded on :meth:`load`.

    ``state_cache`` holds the model's saved conversation states (None: ``state_cache_mb``
    is 0, or not loaded); ``chat_template`` its chat template (None: completion-style).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._llm: Any = None
        self.chat_template: ChatTemplate | None = None
        self.state_cache: StateCache | None = None
        self._identity: FileIdentity | None = None  # of the file when it was loaded
        #: The last few texts tokenised, with their tokens (:meth:`tokens`). A stage counts
        #: its prompt to fit the context, llama.cpp processes it and the trace reports its
        #: size: one tokenisation serves all three. Cleared when the model is closed.
        self._tokenised: collections.OrderedDict[tuple[str, bool], list[int]] = collections.OrderedDict()

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
                    with model_params(self.spec.load.use_extra_bufts):
                        self._llm = llama_cpp.Llama(**self.llama_kwargs())
                finally:
                    reasons = [e for e in _recent_errors if e]
        except (ValueError, RuntimeError, OSError, TemplateError) as exc:
            if isinstance(exc, TemplateError):  # Llama() compiles the GGUF's chat templates
                raise ModelError(
                    f"Model '{self.spec.model_id}': the chat template in {path} is not a valid Jinja "
                    f"template ({exc}); set runtime.models.{self.spec.model_id}.chat_format to "
                    "'completion' (MAGI's transcript) or to a llama.cpp format name such as chatml."
                ) from None
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
        if chat_format != "completion" and (chat_format is not None or has_template):
            try:
                self.chat_template = ChatTemplate.of(self._llm, self.spec.model_id)
            except ModelError:
                self.close()
                raise
        budget = int(self.spec.load.state_cache_mb * 1024 * 1024)
        self.state_cache = StateCache(budget) if budget > 0 else None
        logger.info(
            "Loaded %s from %s (n_ctx=%d, threads=%s/%s, %s, %s)",
            self.spec.model_id,
            path,
            self.spec.n_ctx,
            self.spec.load.n_threads,
            self.spec.load.n_threads_batch,
            self.spec.placement,
            f"chat template {self.chat_template.name}" if self.chat_template else "completion transcript",
        )

    @property
    def is_chat(self) -> bool:
        """Whether the loaded model renders conversations with a chat template."""
        return self.chat_template is not None

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

    def render(self, request: str | Conversation, settings: GenerationSettings) -> RenderedPrompt:
        """The request as this model's text (:mod:`magi.runtime.templates`): its chat
        template, or MAGI's completion transcript (``prompt_template`` and friends).

        Raises:
            ChatTemplateError: the chat template refuses the conversation (422).
        """
        self._require()
        conversation = as_conversation(request)
        if self.chat_template is not None:
            return self.chat_template.render(conversation, self.spec.model_id)
        return RenderedPrompt(render_transcript(conversation, settings))

    def format_prompt(self, request: str | Conversation, settings: GenerationSettings) -> str:
        """The text the model processes for ``request`` (:meth:`render`'s text)."""
        return self.render(request, settings).text

    def tokens(self, text: str, *, add_bos: bool = True) -> list[int]:
        """``text`` as the model's tokens, the way llama-cpp-python tokenises a prompt (BOS
        added if the model wants one and ``add_bos``, special tokens parsed), remembered
        for the next few calls: a stage tokenises its prompt once, and llama.cpp is given
        these tokens. A chat template that writes its own special tokens is tokenised
        with ``add_bos=False``, as llama-cpp-python's chat handler does."""
        llm = self._require()
        key = (text, add_bos)
        cached = self._tokenised.get(key)
        if cached is None:
            cached = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
            self._tokenised[key] = cached
            while len(self._tokenised) > _TOKENISED_TEXTS:
                self._tokenised.popitem(last=False)
        else:
            self._tokenised.move_to_end(key)
        return cached

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def prompt_tokens(self, request: str | Conversation, settings: GenerationSettings) -> list[int]:
        """The tokens llama.cpp processes for ``request``: rendered (:meth:`render`) and
        tokenised once; what :meth:`stream` hands ``create_completion``."""
        rendered = self.render(request, settings)
        return self.tokens(rendered.text, add_bos=rendered.add_bos)

    def count_prompt_tokens(self, request: str | Conversation, settings: GenerationSettings) -> int:
        """Tokens llama.cpp processes for ``request``, the template's own included."""
        return len(self.prompt_tokens(request, settings))

    def _check_fits(self, prompt_tokens: int) -> None:
        if prompt_tokens >= self.spec.n_ctx:
            raise PromptTooLongError(
                f"The prompt has {prompt_tokens} tokens but model '{self.spec.model_id}' runs with "
                f"n_ctx={self.spec.n_ctx}; shorten the prompt or raise runtime.n_ctx "
                f"(the model allows {self.spec.context_length or 'unknown'})."
            )

    def stream(self, request: str | Conversation, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer to ``request`` (a conversation, or a prompt as one user message)
        one piece per generated token."""
        llm = self._require()
        rendered = self.render(request, settings)
        tokens = self.tokens(rendered.text, add_bos=rendered.add_bos)
        self._check_fits(len(tokens))
        # every sampling setting by its own name (SamplingSettings.llama_kwargs)
        kwargs: dict[str, Any] = {**settings.llama_kwargs(), "stream": True}
        if rendered.stop:
            kwargs["stop"] = [*(kwargs["stop"] or []), *rendered.stop]
        if rendered.stopping_criteria is not None:
            kwargs["stopping_criteria"] = rendered.stopping_criteria
        # a conversation in progress (it has history) will likely have a next turn, maybe
        # after another conversation: its state is saved as its answer ends, after the last
        # token, rather than before the first token of the turn that switches back
        in_progress = bool(as_conversation(request).history)
        with prompt_lookup(llm, settings.prompt_lookup):
            yield from self._generate(llm, tokens, kwargs, save=in_progress)

    def _generate(
        self, llm: Any, tokens: list[int], kwargs: dict[str, Any], *, save: bool = False
    ) -> Iterator[str]:
        cache = self.state_cache
        if cache is not None:
            cache.restore(llm, tokens)
        try:
            for chunk in llm.create_completion(tokens, **kwargs):
                # One chunk per token ("" while a multi-byte character is incomplete),
                # then a closing chunk with the finish reason and no text.
                choice = chunk["choices"][0]
                if choice["text"] or choice.get("finish_reason") is None:
                    yield choice["text"]
        except (ValueError, RuntimeError) as exc:
            if "exceed context window" in str(exc):
                raise PromptTooLongError(
                    f"Model '{self.spec.model_id}': {exc}; shorten the prompt or raise runtime.n_ctx "
                    f"(the model allows {self.spec.context_length or 'unknown'})."
                ) from None
            raise BackendError(f"Model '{self.spec.model_id}' failed to generate: {exc}") from exc
        finally:
            # also when the caller stops reading (an answer ended early): llama-cpp-python
            # saves nothing then. Unless saved now, the next generation saves this state if
            # it would overwrite it.
            if cache is not None and self._llm is llm:
                cache.left(len(tokens))
                if save:
                    cache.save(llm, len(tokens))

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
        self.chat_template = None
        self.state_cache = None  # the states belong to the closed context
        if llm is not None:
            llm.close()
            logger.info("Closed %s", self.spec.model_id)
