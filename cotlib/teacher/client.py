"""How to reach the teacher: its configuration, which key goes to which server (never shown,
OpenAI's key to OpenAI only), and the ``openai`` client built from both."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from cotlib.teacher.prompt import check_mode

# -----------------------------------------------------------------------------
# configuration


@dataclass
class TeacherConfig:
    """How to call the teacher. Normally holds no key, only the *name* of a variable; an explicit
    ``api_key`` is kept as a :class:`Secret` (masked in ``repr``, never pickled). Which key goes
    to which server: :func:`resolve_api_key`.

    >>> TeacherConfig(model="cotlib-local-teacher", base_url="http://127.0.0.1:8765/v1").mode
    'conditioned'
    """

    model: str = "gpt-4o"
    base_url: str | None = None  # None = OpenAI; e.g. "http://127.0.0.1:8765/v1" or a vLLM server
    # Which key goes where: resolve_api_key. None/None = OPENAI_API_KEY for OpenAI only;
    # COTLIB_TEACHER_API_KEY or a dummy key for any other server.
    api_key_env: str | None = None  # name an environment variable to send its key anywhere
    prompt_for_key: bool = False  # getpass when the variable is not set
    api_key: Secret | str | None = field(default=None, repr=False)  # explicit; kept as Secret
    mode: str = "conditioned"  # or "blind"
    concurrency: int = 8  # requests in flight at once
    # retries after the first attempt (429, 5xx, timeouts, connection, a malformed 200), by our
    # own policy (cotlib.teacher.run.call_with_retries says why not the SDK's)
    max_retries: int = 4
    timeout_s: float = 60.0  # per attempt, whole request
    backoff_base_s: float = 0.5  # full jitter: sleep uniform(0, min(max, base * 2**retry))
    backoff_max_s: float = 30.0  # also caps a server's Retry-After
    temperature: float | None = None  # None = the server's default
    max_tokens: int | None = 1024
    budget_usd: float | None = None  # ceiling on the total cost recorded in the output file
    prices: dict[str, tuple[float, float]] | None = None  # overrides/extends PRICES
    fsync_interval_s: float = 1.0  # 0 = fsync after every line (see ResultsWriter)
    fail_fast_after: int = 5  # stop after this many connection failures/timeouts in a row
    connect_check_s: float = 8.0  # limit of the reachability check (before a run, after a timeout)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.api_key is not None and not isinstance(self.api_key, Secret):
            self.api_key = Secret(str(self.api_key), "api_key")
        if self.fail_fast_after < 1:
            raise ValueError("fail_fast_after must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")



def chat_request(messages: list[dict], config: TeacherConfig) -> dict:
    """The chat.completions.create arguments (also the Batch API request body).

    >>> chat_request([], TeacherConfig(model="m", temperature=0.0))
    {'model': 'm', 'messages': [], 'temperature': 0.0, 'max_tokens': 1024}
    """
    request: dict[str, Any] = {"model": config.model, "messages": messages}
    if config.temperature is not None:
        request["temperature"] = config.temperature
    if config.max_tokens is not None:
        request["max_tokens"] = config.max_tokens
    return request

# -----------------------------------------------------------------------------
# the API key: never printed, logged or stored


class Secret:
    """A string that hides itself: ``repr`` and ``str`` are masked; ``reveal()`` gives the value.

    >>> s = Secret("sk-" + "test-123456789")
    >>> s, f"{s}", s.reveal()[:3]
    (Secret('********'), '********', 'sk-')
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where the key came from (a variable's name, "dummy"...), never it

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the key to disk
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:  # dataclasses.asdict deep-copies fields
        return self


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")


def redact(text: str, secret: str | Secret | None = None) -> str:
    """``text`` with every occurrence of ``secret`` -- and anything shaped like an OpenAI key
    (``sk-`` followed by 16+ key characters) -- replaced by ``[REDACTED]``.

    >>> redact("bad key sk-" + "abc123def456ghi789 (x)", None)
    'bad key [REDACTED] (x)'
    >>> redact("token=hunter2hunter2", Secret("hunter2hunter2"))
    'token=[REDACTED]'
    """
    text = str(text)
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if value and len(value) >= 4:
        text = text.replace(value, "[REDACTED]")
    return _KEY_LIKE.sub("[REDACTED]", text)


#: Sent to servers that need no key (the local teacher, a vLLM started without --api-key).
DUMMY_KEY = "EMPTY"
#: Where OpenAI's key lives. It is sent to OpenAI's own API host only (see :func:`resolve_api_key`).
OPENAI_KEY_ENV = "OPENAI_API_KEY"
#: The course's variable for a key to any other server (a vLLM started with ``--api-key``, a
#: proxy). Never sent to OpenAI unless named explicitly.
SERVER_KEY_ENV = "COTLIB_TEACHER_API_KEY"
#: OpenAI's own API host: the only host that ever gets the key from ``OPENAI_API_KEY`` by default.
OPENAI_API_HOST = "api.openai.com"
OPENAI_DEFAULT_URL = f"https://{OPENAI_API_HOST}/v1"


def effective_base_url(base_url: str | None) -> str:
    """The URL a client really talks to: ``base_url``, else ``OPENAI_BASE_URL`` (the openai
    client reads it too), else OpenAI's API.

    >>> effective_base_url("http://127.0.0.1:8765/v1")
    'http://127.0.0.1:8765/v1'
    """
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL


def is_openai_url(base_url: str | None) -> bool:
    """True only for OpenAI's own API host over https (``base_url=None`` means OpenAI, unless
    ``OPENAI_BASE_URL`` points elsewhere).

    >>> is_openai_url(None), is_openai_url("http://127.0.0.1:8000/v1")
    (True, False)
    >>> is_openai_url("http://api.openai.com/v1"), is_openai_url("https://api.openai.com.evil.io")
    (False, False)
    """
    url = urlparse(effective_base_url(base_url))
    return url.scheme == "https" and (url.hostname or "").lower() == OPENAI_API_HOST


def _env_or_typed(name: str, prompt: bool) -> Secret | None:
    """The key in environment variable ``name``, else (``prompt``) one typed in, else None."""
    value = os.environ.get(name, "").strip()
    if value:
        return Secret(value, name)
    if prompt:
        value = getpass.getpass(f"{name} (input hidden, not saved): ").strip()
        if value:
            return Secret(value, "typed in")
    return None


def resolve_api_key(
    base_url: str | None = None,
    *,
    api_key: str | Secret | None = None,
    api_key_env: str | None = None,
    prompt: bool = False,
) -> Secret:
    """THE rule for which key goes to which server (the teacher, the filter's LLM judge and
    search's OpenAI judge all use it). In order:

    1. ``api_key`` given explicitly (a string or :class:`Secret`): that key, to any server;
    2. ``api_key_env`` named explicitly (``--api-key-env NAME``): that variable, to any server
       (RuntimeError naming it when it is unset, unless ``prompt`` types it in);
    3. OpenAI's own API host (https://api.openai.com): ``OPENAI_API_KEY``, else typed in with
       ``getpass`` when ``prompt``, else RuntimeError;
    4. any other server (local teacher, vLLM, a classmate's server, a proxy):
       ``COTLIB_TEACHER_API_KEY`` when set, else the dummy key ``"EMPTY"``.
       ``OPENAI_API_KEY`` is never sent there: a server that is not OpenAI must not see it.

    ``Secret.source`` says where the key came from (never the key itself).

    >>> import os; os.environ["OPENAI_API_KEY"] = "not-a-key"
    >>> key = resolve_api_key("http://10.0.0.7:8000/v1")
    >>> key.reveal(), key.source
    ('EMPTY', 'dummy')
    >>> resolve_api_key(None).source
    'OPENAI_API_KEY'
    >>> del os.environ["OPENAI_API_KEY"]
    """
    if api_key is not None:
        secret = api_key if isinstance(api_key, Secret) else Secret(str(api_key))
        if not secret:
            raise RuntimeError("api_key is empty: pass the key, or leave api_key=None")
        return Secret(secret.reveal(), "api_key")
    if api_key_env:
        found = _env_or_typed(api_key_env, prompt)
        if found is not None:
            return found
        raise RuntimeError(
            f"no API key: api_key_env={api_key_env!r} is named but that environment variable "
            "is not set: export it (or a Colab secret), or pass prompt_for_key=True"
        )
    if is_openai_url(base_url):
        found = _env_or_typed(OPENAI_KEY_ENV, prompt)
        if found is not None:
            return found
        raise RuntimeError(
            f"no API key: set the environment variable {OPENAI_KEY_ENV} (e.g. in a Colab "
            "secret), pass prompt_for_key=True to type it in, or use the local teacher "
            "(base_url=...)"
        )
    value = os.environ.get(SERVER_KEY_ENV, "").strip()
    if value:
        return Secret(value, SERVER_KEY_ENV)
    return Secret(DUMMY_KEY, "dummy")


def get_api_key(
    env_var: str | None = None, *, prompt: bool = False, base_url: str | None = None
) -> Secret:
    """The API key for ``base_url`` as a :class:`Secret` (:func:`resolve_api_key` with
    ``api_key_env=env_var``): OpenAI's key for OpenAI only, a dummy key for a server that
    needs none. Raises RuntimeError (without any key in it) when a needed key is missing.

    >>> get_api_key(base_url="http://127.0.0.1:8765/v1").reveal()
    'EMPTY'
    """
    return resolve_api_key(base_url, api_key_env=env_var, prompt=prompt)


def key_for(config: TeacherConfig) -> Secret:
    """The key :func:`resolve_api_key` picks for ``config``."""
    return resolve_api_key(config.base_url, api_key=config.api_key,
                           api_key_env=config.api_key_env, prompt=config.prompt_for_key)


def openai_client(
    config: TeacherConfig | str | None = None,
    *,
    async_client: bool = False,
    key: Secret | None = None,
    **kwargs: Any,
) -> Any:
    """An ``openai.OpenAI`` (or ``AsyncOpenAI``) client for a :class:`TeacherConfig` or a
    ``base_url`` string (None = OpenAI), with the key :func:`resolve_api_key` picks, so that
    OpenAI's key reaches OpenAI only. ``kwargs`` go to the client (``max_retries``,
    ``timeout``, ``http_client``...).

    >>> c = openai_client("http://127.0.0.1:8765/v1"); c.api_key, str(c.base_url)
    ('EMPTY', 'http://127.0.0.1:8765/v1/')
    >>> c.close()
    """
    import openai

    if not isinstance(config, TeacherConfig):
        config = TeacherConfig(base_url=config)
    key = key if key is not None else key_for(config)
    cls = openai.AsyncOpenAI if async_client else openai.OpenAI
    kwargs.setdefault("max_retries", config.max_retries)
    kwargs.setdefault("timeout", config.timeout_s)
    return cls(base_url=effective_base_url(config.base_url), api_key=key.reveal(), **kwargs)


class TeacherError(RuntimeError):
    """A teacher call failed; the message is redacted and safe to show."""


def check_teacher(config: TeacherConfig, timeout_s: float | None = None) -> list[str]:
    """Ask the teacher which models it serves (a cheap connection and key check).

    Raises :class:`TeacherError` with a redacted message that names the URL, and no chained
    exception.
    """
    import openai

    key = key_for(config)
    url = effective_base_url(config.base_url)
    message = None
    try:
        with openai_client(config, key=key, max_retries=0,
                           timeout=timeout_s or config.timeout_s) as client:
            return [m.id for m in client.models.list()]
    except openai.OpenAIError as err:
        message = redact(f"{type(err).__name__}: {err}", key)
    raise TeacherError(f"teacher at {url} failed: {message}")
