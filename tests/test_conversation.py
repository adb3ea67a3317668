"""magi.conversation: what a request is, and every input that is not one (issue 13).

Each bad input is an InvalidConversationError (422, an InvalidPromptError so every entry
point refuses it before any model is asked) whose message names the message's index and
the problem; ``.index`` and ``details["index"]`` hold the index (None: the conversation
as a whole, or the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magi.conversation import (
    MAX_MESSAGES,
    Conversation,
    InvalidConversationError,
    Message,
    as_conversation,
    load_messages,
    to_conversation,
)
from magi.errors import MAGIException
from magi.prompt import InvalidPromptError

USER = {"role": "user", "content": "Hi"}
ANSWER = {"role": "assistant", "content": "Hello!"}


def _refused(request: object, **kwargs: object) -> InvalidConversationError:
    with pytest.raises(InvalidConversationError) as caught:
        to_conversation(request, **kwargs)  # type: ignore[arg-type]
    error = caught.value
    assert error.status_code == 422 and isinstance(error, InvalidPromptError)
    assert error.details["index"] == error.index
    return error


@pytest.mark.parametrize(
    ("request_", "index", "words"),
    [
        ([], None, ["empty", "at least one user message"]),
        ([USER, {"role": "robot", "content": "x"}], 1, ["message 1", "'robot'", "assistant, system, user"]),
        ([{"role": "user", "content": 42}], 0, ["message 0", "int", "text (str)"]),
        ([{"role": "user", "content": ["a", "b"]}], 0, ["message 0", "list", "text (str)"]),
        ([{"role": "user", "content": None}], 0, ["message 0", "NoneType"]),
        (
            [USER, ANSWER, {"role": "system", "content": "Late."}, USER],
            2,
            ["message 2", "may only come first"],
        ),
        ([USER, ANSWER], 1, ["message 1", "assistant", "must be the user's"]),
        ([{"role": "user", "content": "Hi", "tool": "x"}], 0, ["message 0", "unknown field", "tool"]),
        ([USER, {"content": "no role"}], 1, ["message 1", "no 'role'"]),
        ([USER, ANSWER, {"role": "user"}], 2, ["message 2", "no 'content'"]),
        ([USER, "Hi"], 1, ["message 1", "str", "'role' and 'content'"]),
        ([{"role": "user", "content": "  "}], 0, ["message 0", "empty"]),
        ([{"role": "user", "content": "caf\udce9"}], 0, ["message 0", "lone surrogate"]),
        ({"role": "user", "content": "Hi"}, None, ["a list of messages", "dict"]),
        (b"Hi", None, ["a list of messages", "bytes"]),
        (42, None, ["a list of messages", "int"]),
    ],
)
def test_every_bad_input_names_its_message_and_the_problem(
    request_: object, index: int | None, words: list[str]
) -> None:
    error = _refused(request_)
    assert error.index == index
    for word in words:
        assert word in error.message, (word, error.message)


def test_too_many_messages_are_refused() -> None:
    error = _refused([USER] * (MAX_MESSAGES + 1))
    assert error.index is None and str(MAX_MESSAGES) in error.message


def test_an_empty_earlier_answer_is_allowed_but_an_empty_question_is_not() -> None:
    conv = to_conversation(
        [USER, {"role": "assistant", "content": ""}, {"role": "user", "content": "Again?"}]
    )
    assert conv.history[1].content == "" and conv.last_user == "Again?"
    assert _refused([USER, ANSWER, {"role": "user", "content": ""}]).index == 2


def test_a_good_conversation_and_its_views() -> None:
    conv = to_conversation(
        [{"role": "system", "content": "Be brief."}, USER, ANSWER, Message("user", "And you?")]
    )
    assert conv.system == "Be brief." and conv.last_user == "And you?"
    assert [m.role for m in conv.turns] == ["user", "assistant", "user"]
    assert [m.content for m in conv.history] == ["Hi", "Hello!"]
    assert not conv.is_single_prompt and to_conversation("Hi").is_single_prompt
    assert (
        conv.with_last_user("Why?").last_user == "Why?" and conv.with_last_user("Why?").system == "Be brief."
    )
    assert conv.with_system("Be long.").system == "Be long." and conv.with_system(None) is conv
    assert conv.to_dicts()[0] == {"role": "system", "content": "Be brief."}
    assert to_conversation(conv) is conv  # a checked conversation passes straight through


def test_a_default_system_prompt_fills_in_only_when_the_conversation_has_none() -> None:
    assert to_conversation([USER], system="Default.").system == "Default."
    own = to_conversation([{"role": "system", "content": "Own."}, USER], system="Default.")
    assert own.system == "Own."
    with pytest.raises(InvalidPromptError, match="system prompt"):
        to_conversation([USER], system="   ")


def test_as_conversation_takes_what_backends_are_given() -> None:
    assert as_conversation("Hi") == Conversation((Message("user", "Hi"),)) == to_conversation("Hi")
    conv = to_conversation([USER, ANSWER, USER])
    assert as_conversation(conv) is conv
    assert as_conversation([USER]) == to_conversation("Hi")
    with pytest.raises(InvalidConversationError):
        as_conversation([])


# -- messages files ------------------------------------------------------------------------
def test_a_messages_file_is_a_list_or_an_openai_body(tmp_path: Path) -> None:
    listed, body = tmp_path / "list.json", tmp_path / "body.json"
    listed.write_text(json.dumps([USER, ANSWER, USER]), encoding="utf-8")
    body.write_text(json.dumps({"model": "x", "messages": [USER]}), encoding="utf-8")
    assert load_messages(listed).to_dicts() == [USER, ANSWER, USER]
    assert load_messages(body) == to_conversation("Hi")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[{'role': 'user'}", ["not a JSON file of messages"]),
        ("", ["not a JSON file of messages"]),
        ('{"prompt": "Hi"}', ["expected a JSON list of messages", "dict"]),
        ('"Hi"', ["expected a JSON list of messages", "str"]),
    ],
)
def test_a_bad_messages_file_names_the_file(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "messages.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidConversationError) as caught:
        load_messages(path)
    assert caught.value.status_code == 422 and caught.value.index is None
    assert str(path) in caught.value.message
    for word in words:
        assert word in caught.value.message


def test_a_bad_message_in_a_file_names_the_file_and_the_index(tmp_path: Path) -> None:
    path = tmp_path / "messages.json"
    path.write_text(json.dumps([USER, {"role": "user", "content": 3}]), encoding="utf-8")
    with pytest.raises(InvalidConversationError) as caught:
        load_messages(path)
    assert caught.value.index == 1 and f"{path}: message 1" in caught.value.message


def test_a_file_that_is_not_utf8_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"role": "user", "content": "caf\xe9"}]')
    with pytest.raises(InvalidConversationError, match="not a JSON file of messages"):
        load_messages(path)
    with pytest.raises(MAGIException, match="cannot read the messages file") as caught:
        load_messages(tmp_path / "missing.json")
    assert caught.value.status_code == 400
