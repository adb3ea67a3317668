"""Remote model endpoints: models served over HTTP by an OpenAI-compatible server.

An endpoint set is an option of the Hydra ``endpoints`` group
(``conf/endpoints/<name>.yaml``, selected with ``endpoints=<name>``; the default,
``none``, is empty). It maps **model ids** to servers::

    lan_fast_a:                       # the model id profiles list in enabled_models
      url: http://127.0.0.1:8081      # base URL of the server (a trailing /v1 is accepted)
      model: tiny                     # the served model name (default: the id)
      tier: fast                      # the registry tier a local model would get from its size
      api: chat                       # chat (/v1/chat/completions) or completions (/v1/completions)

Keying by id makes ids unique by construction and makes every field a plain Hydra
override (``endpoints.lan_fast_a.url=http://10.0.0.7:8081``).

Credentials may be part of a URL (``http://user:password@host:8080``, sent as HTTP
basic auth, e.g. to a reverse proxy in front of the server), but they are never
shown: every message, log line, trace and ``magi models list`` shows the URL
through :func:`redact_url` (``http://***@host:8080``), and the HTTP client gets the
credentials apart from the URL (:func:`split_credentials`), so even its own logs
and errors never see them. An API key belongs in ``api_key_env`` instead.

Only the *form* of a URL is validated here: it must be ``http://`` or ``https://``
with a host. Whether the server is *reachable* is a runtime fact, checked lazily on
first use, by the health prober, and by ``magi models list`` (which probes each).

An endpoint id that is also the id of a local model in the registry is an error
unless the endpoint says ``override_local: true``; then the server replaces the
local file everywhere (profiles keep naming the same id). See docs/SCALING.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from magi.config.base import MagiModel

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RemoteApi = Literal["chat", "completions"]


REDACTED = "***"
"""What :func:`redact_url` shows instead of a URL's user name and password."""


def redact_url(url: str) -> str:
    """The URL as it may be shown: any ``user:password@`` replaced by ``***@``.

    The one place a URL is made fit for a message, a log line, a trace or a table.
    The user name goes too: tokens are often passed as one (``https://TOKEN@host``).
    Every URL in a longer text is redacted; a text without ``://`` loses whatever
    precedes an ``@`` (``user:pw@host`` pasted without a scheme).

    Example:
        >>> redact_url("http://magi:s3cret@10.0.0.7:8080/v1")
        'http://***@10.0.0.7:8080/v1'
    """
    if "@" not in url:
        return url
    if "://" not in url:
        return _NO_SCHEME_USERINFO.sub(REDACTED + "@", url)
    return _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", url)


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")
_NO_SCHEME_USERINFO = re.compile(r"^\s*[^/?#\s]*@")


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http://u:p@h:8080`` -> (``http://h:8080``, ("u", "p")): the URL to connect to and
    the basic-auth credentials (percent-decoded), or None when the URL has none."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
    return parts._replace(netloc=host).geturl(), credentials


def normalize_base_url(url: str) -> str:
    """``http://h:8080/v1/`` → ``http://h:8080``: MAGI appends ``/v1/...`` itself.

    OpenAI clients take a base URL ending in ``/v1``; llama.cpp's docs give the bare
    server address. Both are accepted so either can be pasted.

    Raises:
        ValueError: not an absolute http(s) URL with a host, or it has a query/fragment.
    """
    text = url.strip()
    parts = urlsplit(text)
    url = redact_url(text)  # every message below shows the URL without its credentials
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8080); "
            "the server must be reachable from this machine at that address"
        )
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host name (e.g. http://127.0.0.1:8080)")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the server's base URL, without '?...' or '#...'")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


class EndpointConfig(MagiModel):
    """One model served by an OpenAI-compatible server (llama-server, llama_cpp.server, ...)."""

    # Pydantic's own error text repeats the input, which may hold a URL's credentials.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = Field(
        description=(
            "Base URL of the server, http(s)://host:port (a trailing /v1 is accepted). It must be "
            "reachable from the machine MAGI runs on; that is checked at first use, not here."
        )
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Model name sent in requests (llama_cpp.server: --model_alias or the model path; "
            "llama-server: --alias). Default: the endpoint's id. Servers with one model ignore it."
        ),
    )
    tier: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Tier the model serves (like a local model's registry tier); profiles may "
        "override it with model_tiers.",
    )
    api: RemoteApi = Field(
        default="chat",
        description=(
            "chat: POST /v1/chat/completions, the server applies the model's chat template "
            "(instruct models). completions: POST /v1/completions with MAGI's prompt_template "
            "applied here (base models, or to match the local backend's completion mode)."
        ),
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Name of an environment variable holding the API key, sent as 'Authorization: Bearer "
            "<key>' (llama_cpp.server --api_key, llama-server --api-key). The key itself never "
            "goes into config files."
        ),
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to establish a connection.")
    read_timeout: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Longest silence (seconds) allowed between two pieces of a response. The tier's "
            "deadlines bound the request too (first token, gap between tokens, budget: "
            "expected_time_seconds x runtime.first_token_timeout_factor / token_gap_timeout_factor / "
            "timeout_factor), connecting and every read included."
        ),
    )
    probe_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a health probe or token count may take, all told."
    )
    health_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/v1/models"],
        min_length=1,
        description=(
            "Paths probed for health, in order; the first that exists decides (a 404 tries the "
            "next). llama-server answers /health (503 while loading); llama_cpp.server has /v1/models."
        ),
    )
    max_concurrency: int = Field(
        default=1,
        ge=1,
        description=(
            "Requests MAGI sends to this endpoint at once (llama_cpp.server runs one at a time; "
            "for llama-server use its --parallel). More wait in MAGI, at most the tier's timeout, "
            "then move to the next model (busy is not counted as a failure)."
        ),
    )
    n_ctx: int | None = Field(
        default=None,
        gt=0,
        description=(
            "The server's context size. When set, prompts are counted on the server before they "
            "are sent and a too-long one is refused at once. Without it the server's own refusal is "
            "recognised, at the cost of one more request."
        ),
    )
    llama_params: bool = Field(
        default=True,
        description=(
            "Send llama.cpp's sampling fields beyond OpenAI's (top_k, min_p, repeat_penalty, and "
            "grammar/json_schema as a GBNF grammar). Set false for "
            "servers that reject unknown fields."
        ),
    )
    trust_env: bool = Field(
        default=False,
        description="Let HTTP(S)_PROXY / SSL_CERT_FILE environment variables apply to this endpoint.",
    )
    override_local: bool = Field(
        default=False,
        description=(
            "Allow this id to also be a local model's id: the endpoint then replaces the local "
            "file everywhere. Without it such a collision is a configuration error."
        ),
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return normalize_base_url(value)

    @field_validator("health_paths")
    @classmethod
    def _paths_absolute(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not p.startswith("/")]
        if bad:
            raise ValueError(f"paths must start with '/' (got {', '.join(map(repr, bad))})")
        return value

    def served_model(self, model_id: str) -> str:
        """The model name to send: ``model``, else the endpoint's id."""
        return self.model or model_id


def _valid_endpoint_id(model_id: str) -> str:
    if not re.fullmatch(MODEL_ID_PATTERN, model_id):
        raise ValueError(
            f"invalid model id {model_id!r}: use letters, digits, '_', '.' and '-', starting with a "
            "letter or digit"
        )
    return model_id


EndpointId = Annotated[str, AfterValidator(_valid_endpoint_id)]
"""A model id used as an endpoint key (validated together with every other field)."""
