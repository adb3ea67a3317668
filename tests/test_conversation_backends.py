"""Backends answer conversations (issue 13): chat templates, completion transcripts,
prompt-token counts that include the template's tokens, the state cache that keeps
interleaved conversations' work, and remote servers sent messages or the transcript.

Everything runs on the tiny generated GGUF models through real llama-cpp-python: the
chat-template model (``chat_model``: a ChatML-like ``tokenizer.chat_template`` and its
special tokens) takes llama-cpp-python's Jinja2ChatFormatter path on every run; the
plain one MAGI's transcript. What llama.cpp processed is read back from the ``Llama``
(its ``input_ids``/``n_tokens``) or observed by counting the tokens ``Llama.eval`` is
given; remote servers are real ``llama_cpp.server`` processes and scripted ones on
127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_cpp import llama_chat_format

from magi.config.model_settings import LoadSettings, ModelOverrides, SamplingSettings, merge
from magi.conversation import Conversation, to_conversation
from magi.errors import ModelError
from magi.runtime.backend import Backend, GenerationSettings, ModelSpec, RemoteSettings, generate
from magi.runtime.llama import LlamaBackend, common_prefix
from magi.runtime.remote import RemoteBackend
from magi.runtime.templates import ChatTemplateError, render_transcript
from magi.testing.runtime import FAST, TinyRuntime
from magi.testing.servers import Exchange, LlamaServerProcess, ScriptedServer, sse_answer
from magi.testing.tiny_gguf import TINY_CHAT_TEMPLATE, write_chat_model

GREEDY = GenerationSettings(max_tokens=6, temperature=0.0, stop=[])
THREE_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about the sea."},
    {"role": "assistant", "content": "It is wet."},
    {"role": "user", "content": "And the mountains?"},
    {"role": "assistant", "content": " They are high. "},
    {"role": "user", "content": "Which is older?"},
]


def _backend(path: Path, **load: object) -> LlamaBackend:
    return LlamaBackend(
        ModelSpec("m", path=path, load=LoadSettings.model_validate({"n_ctx": 512, "n_threads": 1, **load}))
    )


@pytest.fixture
def chat(chat_model: Path) -> Iterator[LlamaBackend]:
    backend = _backend(chat_model)
    yield backend
    backend.close()


@pytest.fixture
def plain(tiny_model: Path) -> Iterator[LlamaBackend]:
    backend = _backend(tiny_model)
    yield backend
    backend.close()


def _processed(backend: LlamaBackend, n_prompt: int) -> list[int]:
    """The prompt tokens the loaded Llama holds after a generation (what llama.cpp processed)."""
    return backend._llm.input_ids[:n_prompt].tolist()


# -- the completion transcript ---------------------------------------------------------------
def test_a_one_message_conversation_renders_exactly_as_the_prompt_template() -> None:
    for template in ("Q: {prompt}\nA:", "{prompt}", "<<{prompt}>> {prompt}"):
        settings = SamplingSettings(prompt_template=template)
        assert render_transcript(to_conversation("Why {x}?"), settings) == template.replace(
            "{prompt}", "Why {x}?"
        )


def test_the_transcript_renders_every_turn() -> None:
    settings = SamplingSettings()
    assert render_transcript(to_conversation(THREE_TURNS), settings) == (
        "Be brief.\n\nQ: Tell me about the sea.\nA: It is wet.\nQ: And the mountains?\nA: They are high.\n"
        "Q: Which is older?\nA:"
    )
    custom = SamplingSettings(
        prompt_template="<user>{prompt}</user>",
        answer_template="<bot>{answer}</bot>",
        system_template="[{system}]",
    )
    assert render_transcript(to_conversation(THREE_TURNS[:4]), custom) == (
        "[Be brief.]<user>Tell me about the sea.</user><bot>It is wet.</bot><user>And the mountains?</user>"
    )


def test_consecutive_messages_of_one_role_are_one_turn_and_a_greeting_stands_alone() -> None:
    settings = SamplingSettings()
    conv = to_conversation(
        [
            {"role": "assistant", "content": "Hi, how can I help?"},
            {"role": "user", "content": "One."},
            {"role": "user", "content": "Two."},
            {"role": "assistant", "content": "A"},
            {"role": "assistant", "content": "B"},
            {"role": "user", "content": "Three."},
        ]
    )
    assert render_transcript(conv, settings) == " Hi, how can I help?\nQ: One.\nTwo.\nA: A\nB\nQ: Three.\nA:"


@pytest.mark.parametrize(
    ("field", "value", "needs"),
    [("system_template", "System: ", "{system}"), ("answer_template", "A", "{answer}")],
)
def test_a_template_without_its_field_is_refused(field: str, value: str, needs: str) -> None:
    with pytest.raises(ValueError, match=needs):
        SamplingSettings.model_validate({field: value})


# -- settings: system_prompt, the templates, state_cache_mb ---------------------------------------
def test_the_new_settings_are_magis_own_and_never_reach_llama(tiny_model: Path) -> None:
    sampling = SamplingSettings(system_prompt="Be brief.", system_template="S: {system}\n")
    kwargs = sampling.llama_kwargs()
    assert not {"system_prompt", "system_template", "answer_template", "prompt_template"} & set(kwargs)
    load = LoadSettings(state_cache_mb=64)
    assert "state_cache_mb" not in load.llama_kwargs()
    backend = _backend(tiny_model, state_cache_mb=1)
    backend.load()  # Llama(...) would refuse an unknown keyword
    try:
        assert backend.state_cache is not None and backend.state_cache.capacity_bytes == 1024 * 1024
    finally:
        backend.close()
    off = _backend(tiny_model, state_cache_mb=0)
    off.load()
    try:
        assert off.state_cache is None
    finally:
        off.close()


def test_system_prompt_merges_per_model_like_every_setting() -> None:
    assert SamplingSettings().system_prompt is None and "system_prompt" in ModelOverrides.model_fields
    merged = merge(SamplingSettings(system_prompt="Default."), ModelOverrides(system_prompt="Own."))
    assert merged.system_prompt == "Own."
    assert (
        merge(SamplingSettings(system_prompt="Default."), ModelOverrides(top_k=3)).system_prompt == "Default."
    )
    assert merge(LoadSettings(), ModelOverrides(state_cache_mb=8)).state_cache_mb == 8


def test_runtime_and_per_model_system_prompt_and_cache_size_compose(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner(
        "development",
        "++runtime.system_prompt='Be brief.'",
        "++runtime.state_cache_mb=32",
        f"++runtime.models.{FAST}={{system_prompt: 'Be fast.', state_cache_mb: 0, "
        "answer_template: ' {answer}'}",
    ) as runner:
        specs = runner.specs
    fast = specs[FAST]
    others = [spec for model_id, spec in specs.items() if model_id != FAST]
    assert (fast.sampling.system_prompt, fast.load.state_cache_mb, fast.sampling.answer_template) == (
        "Be fast.",
        0,
        " {answer}",
    )
    assert others and all(
        s.sampling.system_prompt == "Be brief." and s.load.state_cache_mb == 32 for s in others
    )


# -- LlamaBackend: the chat template path ------------------------------------------------------
def test_the_chat_model_renders_with_llama_cpps_own_formatter(chat: LlamaBackend) -> None:
    conv = to_conversation(THREE_TURNS)
    rendered = chat.render(conv, GREEDY)
    assert chat.chat_template is not None and chat.chat_template.name == "chat_template.default"
    expected = llama_chat_format.Jinja2ChatFormatter(
        template=TINY_CHAT_TEMPLATE, eos_token="<|im_end|>", bos_token="<s>", stop_token_ids=[4]
    )(messages=conv.to_dicts())
    assert rendered.text == expected.prompt and rendered.text.startswith("<s><|im_start|>system\nBe brief.")
    assert rendered.text.endswith("<|im_start|>user\nWhich is older?<|im_end|>\n<|im_start|>assistant\n")
    assert rendered.add_bos is False and rendered.stop == ("<|im_end|>",)  # the template writes the BOS
    tokens = chat.prompt_tokens(conv, GREEDY)
    bos = chat._llm.token_bos()
    assert tokens[0] == bos and tokens[1] != bos  # one BOS, the template's
    assert tokens[1] == chat._llm.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]


def test_the_chat_model_counts_exactly_what_llama_cpps_chat_path_processes(chat: LlamaBackend) -> None:
    """The same tokens as ``Llama.create_chat_completion`` (llama-cpp-python's own chat
    path, its usage figure and the tokens it left in the context), template included."""
    conv = to_conversation(THREE_TURNS)
    count = chat.count_prompt_tokens(conv, GREEDY)
    ours = chat.prompt_tokens(conv, GREEDY)
    text_only = sum(chat.count_tokens(m.content) for m in conv.messages)
    assert count == len(ours) > text_only + 20  # the template's tokens are counted
    reply = chat._llm.create_chat_completion(messages=conv.to_dicts(), max_tokens=1, temperature=0.0)
    assert reply["usage"]["prompt_tokens"] == count
    assert _processed(chat, count) == ours


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_a_three_turn_conversation_is_answered_and_counted_exactly(
    kind: str, chat_model: Path, tiny_model: Path
) -> None:
    backend = _backend(chat_model) if kind == "chat" else _backend(tiny_model)
    try:
        conv: list[dict[str, str]] = [{"role": "user", "content": "Tell me about the sea."}]
        for turn in range(3):
            request = to_conversation(conv)
            count = backend.count_prompt_tokens(request, GREEDY)
            answer = generate(backend, request, GREEDY)
            assert answer.prompt_tokens == count and answer.completion_tokens == GREEDY.max_tokens
            assert answer.text.strip()
            llm = backend._llm
            # llama.cpp processed exactly the counted tokens (and the answer's, but the last)
            assert llm.n_tokens == count + GREEDY.max_tokens - 1
            assert _processed(backend, count) == backend.prompt_tokens(request, GREEDY)
            assert backend.is_chat is (kind == "chat")
            conv += [
                {"role": "assistant", "content": answer.text},
                {"role": "user", "content": f"Turn {turn}?"},
            ]
    finally:
        backend.close()


def test_a_one_message_conversation_is_the_plain_prompt(plain: LlamaBackend) -> None:
    conv = to_conversation("Hello there")
    assert (
        plain.format_prompt(conv, GREEDY)
        == plain.format_prompt("Hello there", GREEDY)
        == "Q: Hello there\nA:"
    )
    assert plain.count_prompt_tokens(conv, GREEDY) == plain.count_tokens("Q: Hello there\nA:")
    assert "".join(plain.stream(conv, GREEDY)) == "".join(plain.stream("Hello there", GREEDY))
    assert plain.format_prompt([{"role": "user", "content": "Hi"}], GREEDY) == "Q: Hi\nA:"  # messages checked


def test_chat_format_completion_forces_the_transcript(chat_model: Path) -> None:
    backend = _backend(chat_model, chat_format="completion")
    try:
        conv = to_conversation(THREE_TURNS)
        text = backend.format_prompt(conv, GREEDY)  # loads the model
        assert "tokenizer.chat_template" in backend._llm.metadata and not backend.is_chat
        assert text == render_transcript(conv, GREEDY) and "<|im_start|>" not in text
        assert generate(backend, conv, GREEDY).prompt_tokens == backend.count_tokens(text)
    finally:
        backend.close()


def test_a_named_chat_format_uses_llama_cpps_registered_formatter(tiny_model: Path) -> None:
    backend = _backend(tiny_model, chat_format="chatml")
    try:
        conv = to_conversation(THREE_TURNS)
        rendered = backend.render(conv, GREEDY)
        expected = llama_chat_format.format_chatml(messages=conv.to_dicts())
        assert rendered.text == expected.prompt and rendered.add_bos is True  # chatml writes no BOS
        assert rendered.stop == ("<|im_end|>",)
        answer = generate(backend, conv, GREEDY)
        assert answer.prompt_tokens == len(
            backend._llm.tokenize(expected.prompt.encode(), add_bos=True, special=True)
        )
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("chat_format", "words"),
    [
        ("chatmll", ["unknown chat_format 'chatmll'", "Did you mean 'chatml'", "llama-2"]),
        ("functionary", ["does not render"]),
    ],
)
def test_a_chat_format_magi_cannot_render_is_a_model_error(
    tiny_model: Path, chat_format: str, words: list[str]
) -> None:
    backend = _backend(tiny_model, chat_format=chat_format)
    with pytest.raises(ModelError) as caught:
        backend.load()
    assert not backend.loaded
    for word in words:
        assert word in str(caught.value)
    assert "runtime.models.m.chat_format" in str(caught.value)


def test_a_template_that_refuses_the_conversation_is_a_422_naming_the_model(tmp_path: Path) -> None:
    strict = (
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    backend = _backend(write_chat_model(tmp_path / "strict.gguf", chat_template=strict))
    try:
        assert generate(backend, "Hi", GREEDY).text
        with pytest.raises(ChatTemplateError) as caught:
            backend.count_prompt_tokens(
                [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], GREEDY
            )
        assert caught.value.status_code == 422
        assert "Model 'm'" in str(caught.value) and "must alternate" in str(caught.value)
    finally:
        backend.close()


def test_a_template_that_is_not_jinja_fails_the_load_with_the_fix(tmp_path: Path) -> None:
    backend = _backend(write_chat_model(tmp_path / "broken.gguf", chat_template="{% for m in messages %}"))
    with pytest.raises(ModelError, match="not a valid Jinja template.*chat_format"):
        backend.load()


# -- the state cache: interleaved conversations keep their work ---------------------------------------
class EvalCounter:
    """Observes a real Llama: the tokens each ``eval`` call is given (the first call of
    a generation is the prompt's part that llama.cpp processes)."""

    def __init__(self, llm: Any) -> None:
        self.calls: list[int] = []
        original = llm.eval

        def counting(tokens: Any) -> None:
            self.calls.append(len(tokens))
            original(tokens)

        llm.eval = counting

    def prompt_part(self, run: Any) -> int:
        self.calls.clear()
        run()
        return self.calls[0]


def _interleave(backend: LlamaBackend) -> tuple[int, int, int, int]:
    """Conversation A's turn, B's turn, then A's second turn: (tokens of A's second
    prompt llama.cpp processed, its prompt's length, the prefix it shares with what A's
    first turn left, and with what B's left)."""
    backend.load()
    counter = EvalCounter(backend._llm)
    a = [{"role": "user", "content": "Tell me about the sea and its many creatures, please."}]
    first = "".join(backend.stream(a, GREEDY))
    after_a = backend._llm.input_ids[: backend._llm.n_tokens].tolist()
    "".join(backend.stream([{"role": "user", "content": "Now something else: rocks, snow and ice."}], GREEDY))
    after_b = backend._llm.input_ids[: backend._llm.n_tokens].tolist()
    a2 = to_conversation([*a, {"role": "assistant", "content": first}, {"role": "user", "content": "More?"}])
    tokens = backend.prompt_tokens(a2, GREEDY)
    processed = counter.prompt_part(lambda: "".join(backend.stream(a2, GREEDY)))
    return processed, len(tokens), common_prefix(after_a, tokens), common_prefix(after_b, tokens)


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_switching_back_to_a_conversation_reuses_its_prefix(
    kind: str, chat_model: Path, tiny_model: Path
) -> None:
    path = chat_model if kind == "chat" else tiny_model
    cached, off = _backend(path), _backend(path, state_cache_mb=0)
    try:
        processed, length, prefix, _ = _interleave(cached)
        first_prompt = cached.count_prompt_tokens(
            [{"role": "user", "content": "Tell me about the sea and its many creatures, please."}], GREEDY
        )
        assert prefix >= first_prompt  # A's whole first prompt (and more) is its second's start
        assert processed == length - prefix  # only the rest was processed
        assert cached.state_cache is not None and cached.state_cache.hits == 1
        processed_off, length_off, _, shared_with_b = _interleave(off)
        # without it: all over again, but for the template's opening B's prompt shares
        assert length_off == length and processed_off == length - shared_with_b
        assert shared_with_b < 12 and processed < processed_off / 2
    finally:
        cached.close()
        off.close()


def test_a_single_prompt_is_saved_only_when_another_takes_the_model(plain: LlamaBackend) -> None:
    """A prompt without history (a one-off question, a conversation's first turn) leaves
    its state live and copies nothing (18 KB a token on Gemma 3 270M, inside the answer's
    time): it is saved only when a prompt that would overwrite it arrives."""
    plain.load()
    cache = plain.state_cache
    assert cache is not None
    first = [{"role": "user", "content": "Tell me about the sea, please."}]
    answer = "".join(plain.stream(first, GREEDY))
    assert len(cache) == 0  # nothing copied: the live state is this prompt's
    held = plain._llm.n_tokens
    "".join(plain.stream("Something else entirely.", GREEDY))  # another conversation
    assert len(cache) == 1 and cache.size_bytes > 0  # the first one's state, kept before it was overwritten
    on = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "More?"}]
    counter = EvalCounter(plain._llm)
    processed = counter.prompt_part(lambda: "".join(plain.stream(on, GREEDY)))
    assert cache.hits == 1 and processed < plain.count_prompt_tokens(on, GREEDY) - held // 2


def test_a_follow_up_turn_is_saved_when_its_answer_ends(plain: LlamaBackend) -> None:
    """A conversation in progress will likely have a next turn, maybe after another
    conversation: its state is copied when its answer ends (after the last token), so the
    turn that switches back only restores it (not copy, then restore, before its first
    token: scripts/bench_turns.py's interleaved case)."""
    plain.load()
    cache = plain.state_cache
    assert cache is not None
    conv = [{"role": "user", "content": "Sea?"}]
    answer = "".join(plain.stream(conv, GREEDY))
    conv += [{"role": "assistant", "content": answer}, {"role": "user", "content": "More?"}]
    "".join(plain.stream(conv, GREEDY))
    assert len(cache) == 1  # saved as its answer ended
    saved = cache.size_bytes
    "".join(plain.stream("Something else entirely.", GREEDY))  # its own state is not saved
    assert len(cache) == 1 and cache.size_bytes == saved


def test_an_answer_ended_early_is_saved_too(plain: LlamaBackend) -> None:
    """llama-cpp-python saves a streamed generation's state only after its closing chunk;
    MAGI saves it when the stream is closed early (the runner's stop, budget, cancel)."""
    plain.load()
    stream = plain.stream("Tell me a long story about the sea.", GenerationSettings(max_tokens=50, stop=[]))
    [next(stream) for _ in range(3)]
    stream.close()
    cache = plain.state_cache
    held = plain._llm.n_tokens
    "".join(plain.stream("Something else entirely.", GREEDY))  # another conversation
    assert cache is not None and len(cache) == 1  # the early-ended answer's state, kept
    counter = EvalCounter(plain._llm)
    again = counter.prompt_part(lambda: "".join(plain.stream("Tell me a long story about the sea.", GREEDY)))
    assert cache.hits == 1 and again == 1  # the prompt was held: one token replayed for its logits
    assert held > plain.count_prompt_tokens("Tell me a long story about the sea.", GREEDY)


def test_the_cache_keeps_within_its_budget_and_drops_states_it_supersedes(tiny_model: Path) -> None:
    backend = _backend(tiny_model)
    try:
        backend.load()
        cache = backend.state_cache
        assert cache is not None
        sea = [{"role": "user", "content": "Sea?"}]
        first = "".join(backend.stream(sea, GREEDY))
        "".join(backend.stream("Tell me about rocks.", GREEDY))  # saves the sea's first turn
        first_turn = set(cache._states)
        on = [*sea, {"role": "assistant", "content": first}, {"role": "user", "content": "More?"}]
        "".join(backend.stream(on, GREEDY))  # restores it (and saves the rocks' state)
        "".join(backend.stream("Tell me about snow.", GREEDY))  # saves the sea's second turn
        # restored: the sea's first turn, then the rocks' "Tell me about " for the snow
        assert cache.hits == 2 and len(cache) == 2  # rocks, and the sea's second turn:
        assert not first_turn & set(cache._states)  # it superseded the first
        cache.clear()
        "".join(backend.stream("Tell me about rocks.", GREEDY))  # saves the snow's state
        cache.capacity_bytes = int(cache.size_bytes * 2.5)  # room for two such states
        for topic in ("mice", "wind", "haze"):  # each saves the one before (no first letters shared)
            "".join(backend.stream(f"Tell me about {topic}.", GREEDY))
            assert cache.size_bytes <= cache.capacity_bytes
        assert len(cache) == 2  # mice and wind: the least recently used went first
        counter, hits = EvalCounter(backend._llm), cache.hits
        assert counter.prompt_part(lambda: "".join(backend.stream("Tell me about mice.", GREEDY))) == 1
        assert cache.hits == hits + 1
    finally:
        backend.close()


def test_the_cache_keeps_at_most_max_states(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each generation compares its prompt with every saved state, so their number is
    bounded whatever their size (MAX_STATES): the least recently used goes first."""
    from magi.runtime import llama

    monkeypatch.setattr(llama, "MAX_STATES", 3)
    backend = _backend(tiny_model)
    try:
        for topic in ("rocks", "snow", "mice", "wind", "rain"):
            "".join(backend.stream(f"Tell me about {topic}.", GREEDY.model_copy(update={"max_tokens": 1})))
        cache = backend.state_cache
        assert cache is not None and len(cache) == 3 and cache.size_bytes < cache.capacity_bytes
    finally:
        backend.close()


# -- remote backends ------------------------------------------------------------------------
def _remote(url: str, api: str) -> RemoteBackend:
    return RemoteBackend(ModelSpec(f"remote_{api}", remote=RemoteSettings(url=url, model="tiny", api=api)))


def _sse_chat_answer(ex: Exchange) -> None:
    """Two tokens in ``/v1/chat/completions`` form (a role chunk, deltas, a finish)."""
    ex.start()
    for delta, finish in (
        ({"role": "assistant"}, None),
        ({"content": "a"}, None),
        ({"content": "a"}, None),
        ({}, "length"),
    ):
        ex.chunk(
            "data: "
            + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            + "\n\n"
        )
    ex.chunk("data: [DONE]\n\n")
    ex.end()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_remote_requests_carry_the_messages_or_the_transcript(api: str) -> None:
    conv = to_conversation(THREE_TURNS)
    with ScriptedServer(_sse_chat_answer if api == "chat" else sse_answer(tokens=2)) as server:
        backend = _remote(server.url, api)
        try:
            assert "".join(backend.stream(conv, GREEDY)) == "aa"
            assert backend.count_prompt_tokens(conv, GREEDY) > 0  # estimated: no tokenizer endpoint
        finally:
            backend.close()
        [body] = [json.loads(ex.body) for ex in server.requests if ex.path.startswith("/v1/")]
    if api == "chat":
        assert [ex.path for ex in server.requests if ex.path.startswith("/v1/")] == ["/v1/chat/completions"]
        assert body["messages"] == conv.to_dicts() and "prompt" not in body
    else:
        assert body["prompt"] == render_transcript(conv, GREEDY) and "messages" not in body


@pytest.mark.slow
def test_remote_chat_and_completions_answer_as_the_local_model(chat_model: Path, tmp_path: Path) -> None:
    """A real llama_cpp.server on the chat-template model: ``api: chat`` gets the answer
    the local backend gives through the same template, ``api: completions`` the answer to
    the transcript (the local model with ``chat_format: completion``), token counts from
    the server's tokenizer."""
    conv = to_conversation(THREE_TURNS)
    local_chat, local_transcript = (
        _backend(chat_model, n_ctx=256),
        _backend(chat_model, n_ctx=256, chat_format="completion"),
    )
    with LlamaServerProcess(chat_model, alias="tiny", log_dir=tmp_path) as server:
        chat, completions = _remote(server.url, "chat"), _remote(server.url, "completions")
        try:
            assert generate(chat, conv, GREEDY).text == generate(local_chat, conv, GREEDY).text
            remote = generate(completions, conv, GREEDY)
            local = generate(local_transcript, conv, GREEDY)
            assert remote.text == local.text
            assert remote.prompt_tokens == local.prompt_tokens  # the server counted the transcript
            assert chat.count_prompt_tokens(conv, GREEDY) == sum(
                local_chat.count_tokens(m.content) for m in conv.messages
            )
        finally:
            for backend in (chat, completions, local_chat, local_transcript):
                backend.close()


# -- the fakes keep the protocol ---------------------------------------------------------------
def test_the_test_fakes_pass_conversations_through(echo_runtime: TinyRuntime) -> None:
    from magi.testing.runtime import FaultInjector

    injector = FaultInjector()
    with echo_runtime.runner("development", backend_factory=injector) as runner:
        backend = injector(runner.specs[FAST])
        assert isinstance(backend, Backend)
        conv: Conversation = to_conversation(THREE_TURNS)
        text = "".join(backend.stream(conv, GREEDY))
        assert injector.prompts[FAST] == [conv] and text
        assert backend.count_prompt_tokens(conv, GREEDY) == backend.inner.count_prompt_tokens(conv, GREEDY)
        backend.close()
