"""How a conversation becomes the text a model processes: the one home of prompt rendering.

Two kinds of model, two renderings, both used by every backend that needs text:

* A **chat model** (a ``tokenizer.chat_template`` in its GGUF, or ``chat_format`` set to
  one of llama-cpp-python's registered format names) gets its own template, rendered by
  llama-cpp-python's own formatter (:class:`ChatTemplate`): the same
  ``Jinja2ChatFormatter`` (the GGUF's template, its BOS/EOS token texts, its EOS id as
  the stop token) or registered format function ``Llama.create_chat_completion`` would
  use, so the text is exactly what llama.cpp's chat path would process. The backend
  tokenises that text once, the way llama-cpp-python's chat handler does (no BOS of its
  own when the template writes the special tokens, ``added_special``), counts it and
  hands llama.cpp the tokens.
* A **completion-style model** gets a transcript (:func:`render_transcript`) from three
  of MAGI's sampling settings, so that every turn is rendered and a one-message
  conversation reads exactly as a single prompt always has::

      system_template(system)                     "{system}\\n\\n"
      + prompt_template(user) + answer_template(assistant)   for each earlier turn
      + prompt_template(last user)                "Q: {prompt}\\nA:"

  With the defaults: ``"Be brief.\\n\\nQ: Hi\\nA: Hello!\\nQ: And you?\\nA:"``.
  Consecutive user messages (nothing answered in between) are one user turn, their texts
  joined by a newline; consecutive assistant messages likewise one answer. An answer's
  surrounding whitespace is trimmed (the model wrote it after ``A:`` with a space of its
  own, which ``answer_template`` puts back), so the next turn's transcript starts with
  the tokens the model already processed and llama.cpp re-uses them.

A chat template gets the messages as they are, consecutive ones of a role included:
what it makes of them is the model's own format (a template that refuses them, e.g.
one that requires alternating turns, raises :class:`ChatTemplateError`, 422).

Remote models use the same transcript for ``api: completions``; ``api: chat`` sends the
messages and the server applies its model's template.

Example:
    >>> from magi.conversation import to_conversation
    >>> from magi.config.model_settings import SamplingSettings
    >>> turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello!"},
    ...          {"role": "user", "content": "And you?"}]
    >>> render_transcript(to_conversation(turns, system="Be brief."), SamplingSettings())
    'Be brief.\\n\\nQ: Hi\\nA: Hello!\\nQ: And you?\\nA:'
    >>> render_transcript(to_conversation("Hi"), SamplingSettings())  # prompt_template alone
    'Q: Hi\\nA:'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from magi.config.model_settings import SamplingSettings
from magi.conversation import Conversation, InvalidConversationError, Message
from magi.errors import ModelError, did_you_mean, format_options


def _joined(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """The turns with consecutive messages of one role joined by a newline."""
    turns: list[tuple[str, str]] = []
    for message in messages:
        if turns and turns[-1][0] == message.role:
            turns[-1] = (message.role, f"{turns[-1][1]}\n{message.content}")
        else:
            turns.append((message.role, message.content))
    return turns


def render_transcript(conversation: Conversation, settings: SamplingSettings) -> str:
    """The completion-style transcript of ``conversation`` (module docstring): the system
    part, each earlier user/assistant turn, then the last user turn's ``prompt_template``.
    An answer before any user turn (a greeting) is its ``answer_template`` alone."""
    parts: list[str] = []
    if conversation.system is not None:
        parts.append(settings.system_template.replace("{system}", conversation.system))
    for role, text in _joined(conversation.turns):
        if role == "user":
            parts.append(settings.prompt_template.replace("{prompt}", text))
        else:
            parts.append(settings.answer_template.replace("{answer}", text.strip()))
    return "".join(parts)


@dataclass(frozen=True)
class RenderedPrompt:
    """A conversation as one model's text.

    ``add_bos``: whether tokenising it adds the model's BOS (False when a chat template
    writes its own special tokens). ``stop``: stop strings the template adds (its EOS
    text); ``stopping_criteria``: llama-cpp-python's, ending the answer on the
    template's stop token ids (None: none)."""

    text: str
    add_bos: bool = True
    stop: tuple[str, ...] = ()
    stopping_criteria: Any = field(default=None, compare=False)


class ChatTemplateError(InvalidConversationError):
    """A model's chat template refuses the conversation (e.g. it requires alternating
    user and assistant turns): the request cannot be answered by this model (422)."""


class ChatTemplate:
    """A loaded ``llama_cpp.Llama``'s chat template, resolved the way
    ``Llama.create_chat_completion`` resolves it: ``llm.chat_handler``'s formatter is not
    reachable, so MAGI never sets one; ``llm.chat_format`` names either a template from
    the GGUF metadata (``chat_template.default``, ``chat_template.<name>``) or a
    registered format (``chatml``, ``llama-2``, ...; also guessed by llama-cpp-python
    from a GGUF template that equals a known one)."""

    def __init__(self, formatter: Callable[..., Any], name: str) -> None:
        self.formatter = formatter
        self.name = name

    @classmethod
    def of(cls, llm: Any, model_id: str) -> ChatTemplate:
        """The chat template of ``llm`` (loaded with ``chat_format`` set or from a GGUF with
        a template).

        Raises:
            ModelError: ``chat_format`` names no format llama-cpp-python knows, or one that
                is not a prompt formatter (a multimodal or function-calling handler).
        """
        from llama_cpp import llama_chat_format

        name = llm.chat_format
        metadata = llm.metadata or {}
        if name in getattr(llm, "_chat_handlers", {}):  # a template of the GGUF itself
            key = "tokenizer.chat_template" if name == "chat_template.default" else f"tokenizer.{name}"
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=metadata[key],
                eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )
            return cls(formatter, name)
        registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()
        known = sorted(registry._chat_handlers)
        where = f"runtime.models.{model_id}.chat_format (or runtime.chat_format)"
        if name not in registry._chat_handlers:
            raise ModelError(
                f"Model '{model_id}': unknown chat_format {name!r} in {where}.{did_you_mean(name, known)} "
                f"The formats are {format_options(known)}; or 'completion' for MAGI's transcript, or "
                "null for the GGUF's own chat template."
            )
        handler = registry._chat_handlers[name]
        # register_chat_format wraps the format function in a closure over `chat_formatter`
        code = getattr(handler, "__code__", None)
        cells = getattr(handler, "__closure__", None) or ()
        names = code.co_freevars if code is not None else ()
        if "chat_formatter" not in names:
            raise ModelError(
                f"Model '{model_id}': chat_format {name!r} ({where}) is a llama-cpp-python handler that "
                "does not render a text prompt (multimodal or function calling); MAGI sends text "
                "conversations: choose a prompt format or the GGUF's own template (null)."
            )
        return cls(cells[names.index("chat_formatter")].cell_contents, name)

    def render(self, conversation: Conversation, model_id: str) -> RenderedPrompt:
        """The conversation as the template's text, with the template's stops.

        Raises:
            ChatTemplateError: the template refuses the conversation (its ``raise_exception``).
        """
        try:
            result = self.formatter(messages=conversation.to_dicts())
        except ValueError as exc:  # Jinja templates' raise_exception(...)
            raise ChatTemplateError(
                f"Model '{model_id}': its chat template ({self.name}) refuses this conversation: {exc}"
            ) from None
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return RenderedPrompt(
            text=result.prompt,
            add_bos=not result.added_special,
            stop=tuple(s for s in stop if s),
            stopping_criteria=result.stopping_criteria,
        )
