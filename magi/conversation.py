"""What a request is: a conversation of messages, or one prompt as its shortcut.

One home for the rules every entry point applies (``Runner.run``/``stream``/
``run_many``/``route``, ``run.py``, ``magi ask``/``route``/``chat``, and the server):
a request is either a plain string (one user message) or a list of messages, each
``{"role": "system" | "user" | "assistant", "content": str}`` (or a :class:`Message`).
:func:`to_conversation` checks it and raises :class:`InvalidConversationError` (422)
naming the message index and the problem, so input that can never succeed is the
request's error, never a model's failure.

Example:
    >>> conv = to_conversation([{"role": "user", "content": "Hi"}], system="Be brief.")
    >>> [m.role for m in conv.messages], conv.last_user
    (['system', 'user'], 'Hi')
    >>> to_conversation("Why is the sky blue?").messages
    (Message(role='user', content='Why is the sky blue?'),)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from magi.errors import MAGIException, format_options
from magi.prompt import InvalidPromptError, check_prompt

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)

#: Most messages one conversation may hold (a request, a ``--messages`` file).
MAX_MESSAGES = 10_000


class InvalidConversationError(InvalidPromptError):
    """A conversation no model could answer: empty, an unknown role, content that is not
    text, or not ending with a user turn. The message names the message's index (422);
    ``details["index"]`` holds it (None for the conversation as a whole)."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message, details={"index": index})
        self.index = index


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        """The OpenAI form, ``{"role": ..., "content": ...}``."""
        return {"role": self.role, "content": self.content}


MessageLike = Message | Mapping[str, object]
#: What the Runner accepts as one request: a prompt, or messages.
Request = str | Sequence[MessageLike]


@dataclass(frozen=True)
class Conversation:
    """A checked conversation: at most one system message, first; then user and
    assistant turns; the last one from the user."""

    messages: tuple[Message, ...]

    @property
    def system(self) -> str | None:
        """The system prompt, if the conversation has one."""
        first = self.messages[0]
        return first.content if first.role == "system" else None

    @property
    def turns(self) -> tuple[Message, ...]:
        """The messages after the system prompt."""
        return self.messages[1:] if self.system is not None else self.messages

    @property
    def last_user(self) -> str:
        """The message being answered: the last user turn's text."""
        return self.messages[-1].content

    @property
    def history(self) -> tuple[Message, ...]:
        """The turns before the one being answered (system prompt excluded)."""
        return self.turns[:-1]

    @property
    def is_single_prompt(self) -> bool:
        """One user message and no system prompt: what a plain string request is."""
        return len(self.messages) == 1

    def with_last_user(self, content: str) -> Conversation:
        """The same conversation with the last user message replaced (a refine's prompt)."""
        return Conversation((*self.messages[:-1], Message("user", content)))

    def with_system(self, system: str | None) -> Conversation:
        """The conversation with ``system`` as its system prompt (replacing its own);
        None leaves it as it is."""
        if system is None:
            return self
        return Conversation((Message("system", system), *self.turns))

    def to_dicts(self) -> list[dict[str, str]]:
        """The messages in the OpenAI form (what ``create_chat_completion`` and servers take)."""
        return [m.to_dict() for m in self.messages]


def _message(item: object, index: int, what: str) -> Message:
    where = f"{what}: message {index}"
    if isinstance(item, Message):
        role, content = item.role, item.content
    elif isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in ("role", "content", "name"))
        if unknown:
            raise InvalidConversationError(
                f"{where} has unknown field(s) {', '.join(unknown)}; a message has 'role' and 'content'.",
                index=index,
            )
        if "role" not in item or "content" not in item:
            missing = "role" if "role" not in item else "content"
            raise InvalidConversationError(
                f'{where} has no \'{missing}\'; a message is {{"role": ..., "content": ...}}.', index=index
            )
        role, content = item["role"], item["content"]
    else:
        raise InvalidConversationError(
            f"{where} is a {type(item).__name__}; each message is an object with 'role' and 'content'.",
            index=index,
        )
    if role not in ROLES:
        raise InvalidConversationError(
            f"{where} has role {role!r}; the roles are {format_options(ROLES)}.", index=index
        )
    if not isinstance(content, str):
        raise InvalidConversationError(
            f"{where} ({role}) has content of type {type(content).__name__}; content must be text (str).",
            index=index,
        )
    try:
        # an earlier answer may be empty; the text of every message must be encodable
        check_prompt(
            content if content.strip() or role != "assistant" else content + ".", what=f"{where} ({role})"
        )
    except InvalidPromptError as exc:
        raise InvalidConversationError(exc.message, index=index) from None
    return Message(role, content)  # type: ignore[arg-type]


def to_conversation(
    request: object, *, system: str | None = None, what: str = "The conversation"
) -> Conversation:
    """Check a request and return it as a :class:`Conversation`.

    A string is one user message (checked by :func:`magi.prompt.check_prompt`). A list
    of messages must be non-empty; each message has a known role and text content; a
    system message may only come first; the last message must be the user's (there is
    nothing to answer after an assistant turn). ``system`` (a default system prompt:
    the call's, the model's or the profile's) is used when the conversation has none
    of its own.

    Raises:
        InvalidConversationError: naming the message index and the problem (422).
        InvalidPromptError: a plain string prompt that is not valid text (422).
    """
    if isinstance(request, Conversation):
        conv = request
    elif isinstance(request, str):
        conv = Conversation((Message("user", check_prompt(request)),))
    elif isinstance(request, (bytes, bytearray)) or not isinstance(request, Sequence):
        raise InvalidConversationError(
            f"{what} must be a prompt (str) or a list of messages, not {type(request).__name__}."
        )
    else:
        if not request:
            raise InvalidConversationError(f"{what} is empty: give at least one user message.")
        if len(request) > MAX_MESSAGES:
            raise InvalidConversationError(f"{what} has {len(request)} messages; at most {MAX_MESSAGES}.")
        messages = tuple(_message(item, i, what) for i, item in enumerate(request))
        for i, message in enumerate(messages):
            if message.role == "system" and i > 0:
                raise InvalidConversationError(
                    f"{what}: message {i} is a system message; a system message may only come first.",
                    index=i,
                )
        last = len(messages) - 1
        if messages[-1].role != "user":
            raise InvalidConversationError(
                f"{what}: message {last} ({messages[-1].role}) ends the conversation; the last message "
                "must be the user's, the one to answer.",
                index=last,
            )
        conv = Conversation(messages)
    if system is not None and conv.system is None:
        check_prompt(system, what="The system prompt")
        conv = conv.with_system(system)
    return conv


def as_conversation(request: str | Conversation | Sequence[MessageLike]) -> Conversation:
    """What a backend is given, as a :class:`Conversation`: a checked one as it is, a
    plain string as one user message (unchecked: the backend's callers check prompts,
    and a backend answers what it is sent), messages checked by :func:`to_conversation`.

    Example:
        >>> as_conversation("Hi") == to_conversation("Hi")
        True
    """
    if isinstance(request, Conversation):
        return request
    if isinstance(request, str):
        return Conversation((Message("user", request),))
    return to_conversation(request)


def load_messages(path: str | Path) -> Conversation:
    """A conversation from a JSON file: a list of messages, or ``{"messages": [...]}``
    (the OpenAI request body). Errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MAGIException(
            f"{path}: cannot read the messages file ({exc.strerror}).", status_code=400
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidConversationError(f"{path}: not a JSON file of messages ({exc}).") from None
    if isinstance(data, Mapping) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise InvalidConversationError(
            f'{path}: expected a JSON list of messages (or an object with "messages"), got '
            f"{type(data).__name__}."
        )
    return to_conversation(data, what=str(path))
