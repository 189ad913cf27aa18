"""Request bodies of the OpenAI / Mistral chat and completion APIs, and their SamplingParams.

Names follow OpenAI's API; Mistral's spellings (`random_seed`, `safe_prompt`) and vLLM's extensions
(`top_k`, `min_p`, `ignore_eos`, `repetition_penalty`, `stop_token_ids`) are accepted beside them. `logprobs`:
chat takes `logprobs: true` and `top_logprobs` 0..20 (OpenAI's); completions take `logprobs` 0..20 (vLLM's
limit, above OpenAI's 5, so evaluation harnesses asking for more are served) and `echo`. Fields this
server does not implement are refused with a 400 naming them, unless they carry their neutral value;
fields unknown to both APIs are ignored, as OpenAI-compatible servers do. `tools`, `tool_choice` and
`response_format` are kept as sent, for the function-calling layer to interpret.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.logprobs import MAX_TOP_LOGPROBS
from mixtral_trt.runtime.sampling import SamplingParams


class BadRequest(MixtralTrtError):
    """A request the server refuses with 400; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# the name a runtime error starts with -> the request field it comes from
REQUEST_FIELDS = {"max_new_tokens": "max_tokens", "chat": "messages"}


def param_of(error: Exception) -> str | None:
    """The request field a one-line error names: `BadRequest.param`; `messages[n]` for a runtime error about
    message n; else the request field its first word is (`temperature=...`, `prompt 2: ...`)."""
    if isinstance(error, BadRequest):
        return error.param
    text = str(error)
    message = re.match(r"chat: message (\d+)", text)
    if message:
        return f"messages[{message.group(1)}]"
    if text.startswith(("chat: tools", "tools")):
        return "tools"
    word = re.match(r"[a-z_]+", text)
    name = REQUEST_FIELDS.get(word.group(), word.group()) if word else None
    return name if name in ChatCompletionRequest.model_fields or name in CompletionRequest.model_fields else None


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]  # JSON true is not 1
Float = Annotated[float, BeforeValidator(_not_bool)]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class Sampling(BaseModel):
    """The settings both endpoints share. Defaults are OpenAI's (temperature 1, top_p 1)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: Float | None = None
    top_p: Float | None = None
    top_k: Int | None = None  # vLLM; 0 or -1: every token
    max_tokens: Int | None = None  # default: what is left of the context
    stop: str | list[str] | None = None
    seed: Int | None = None
    random_seed: Int | None = None  # Mistral's name for seed
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM
    repetition_penalty: Float | None = None  # vLLM
    min_p: Float | None = None  # vLLM
    stop_token_ids: list[Int] | None = None  # vLLM
    n: Int | None = None
    presence_penalty: Float | None = None
    frequency_penalty: Float | None = None
    logit_bias: dict[str, Float] | None = None  # token id (as JSON keys are strings) -> bias in [-100, 100]
    user: str | None = None

    def check_unsupported(self) -> None:
        """Fields this server refuses (the endpoints add theirs)."""

    def samples(self, max_batch: int) -> int:
        """`n`: choices per prompt, each a row of the batch (1..max_batch)."""
        n = 1 if self.n is None else self.n
        if not 1 <= n <= max_batch:
            raise BadRequest(f"n={n}: must be between 1 and the server's batch limit {max_batch} (each choice "
                             "decodes in a row of the batch)", "n")
        return n

    def top_logprobs_count(self) -> int | None:
        """How many top tokens each generated token reports (None: no logprobs)."""
        return None

    def prompt_logprobs_count(self) -> int | None:
        """How many top tokens each prompt token reports (echo; None: none)."""
        return None

    def sampling_params(self, max_new_tokens: int) -> SamplingParams:
        if self.seed is not None and self.random_seed is not None and self.seed != self.random_seed:
            raise BadRequest(f"seed={self.seed} and random_seed={self.random_seed}: give one", "seed")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        settings = dict(
            max_new_tokens=max_new_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=0 if self.top_k in (None, -1) else self.top_k,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            min_p=self.min_p or 0.0,
            seed=self.seed if self.seed is not None else self.random_seed,
            stop=tuple(stop),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            logit_bias=self._logit_bias(),
            logprobs=self.top_logprobs_count(),
            prompt_logprobs=self.prompt_logprobs_count(),
        )
        return SamplingParams(**settings)  # raises MixtralTrtError naming the field

    def _logit_bias(self) -> dict[int, float]:
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            if not re.fullmatch(r"\d{1,9}", key):
                raise BadRequest(f"logit_bias: key {key[:20]!r} is not a token id", "logit_bias")
            bias[int(key)] = value
        return bias

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(Sampling):
    messages: list[Message]
    max_completion_tokens: Int | None = None  # OpenAI's newer name for max_tokens
    safe_prompt: bool = False  # Mistral: the guardrail system prompt in front
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: Int | None = None  # 0..20, with logprobs: true
    echo: bool = False  # vLLM's chat echo: refused
    prompt_logprobs: bool | Int | None = None  # Mistral's / vLLM's: refused (completions' echo gives them)
    min_tokens: Int | None = None  # Mistral's / vLLM's: refused unless 0

    def check_unsupported(self) -> None:
        if self.echo:
            raise BadRequest("echo: not supported by chat completions (use /v1/completions)", "echo")
        if self.prompt_logprobs not in (None, False):
            raise BadRequest("prompt_logprobs: not supported by chat completions (use /v1/completions with echo "
                             "and logprobs)", "prompt_logprobs")
        if self.min_tokens not in (None, 0):
            raise BadRequest(f"min_tokens={self.min_tokens}: not supported", "min_tokens")
        if self.top_logprobs is not None:
            if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
                raise BadRequest(f"top_logprobs={self.top_logprobs}: must be between 0 and {MAX_TOP_LOGPROBS}",
                                 "top_logprobs")
            if not self.logprobs:
                raise BadRequest("top_logprobs: needs logprobs: true", "top_logprobs")

    def top_logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def chat_messages(self) -> list[dict[str, str]]:
        """role/content dicts; content given as a list of text parts is joined; OpenAI's `developer` role is
        the system role."""
        out = []
        for n, m in enumerate(self.messages):
            content = m.content
            if isinstance(content, list):
                texts = []
                for part in content:
                    if part.get("type") != "text" or not isinstance(part.get("text"), str):
                        raise BadRequest(f"messages[{n}].content: only text parts are supported, got "
                                         f"{part.get('type')!r}", f"messages[{n}].content")
                    texts.append(part["text"])
                content = "".join(texts)
            message = m.model_dump(exclude_none=True)
            message["content"] = content or ""
            if message["role"] == "developer":
                message["role"] = "system"
            out.append(message)
        return out

    @property
    def wants_tools(self) -> bool:
        """True when the request needs the function-calling / constrained-output layer."""
        fmt = (self.response_format or {}).get("type", "text")
        return bool(self.tools) or fmt != "text" or self.tool_choice not in (None, "none", "auto")

    @property
    def max_new_tokens(self) -> int | None:
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise BadRequest("max_tokens and max_completion_tokens differ: give one", "max_tokens")
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(Sampling):
    prompt: str | list[Int] | list[str] | list[list[Int]]
    echo: bool = False
    suffix: str | None = None
    best_of: Int | None = None
    logprobs: Int | None = None  # top tokens per position (0..20); the chosen one is always given

    def check_unsupported(self) -> None:
        if not 0 <= (self.logprobs or 0) <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"logprobs={self.logprobs}: must be an integer between 0 and {MAX_TOP_LOGPROBS} (top "
                             "tokens per position)", "logprobs")
        if self.suffix:
            raise BadRequest("suffix: not supported", "suffix")
        if self.best_of not in (None, 1):
            raise BadRequest("best_of: not supported", "best_of")

    def top_logprobs_count(self) -> int | None:
        return self.logprobs

    def prompt_logprobs_count(self) -> int | None:
        return self.logprobs if self.echo else None

    def prompts(self) -> list[str | list[int]]:
        """One prompt per choice: a string, a list of ids, or a list of either."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        if not p:
            raise BadRequest("prompt: empty", "prompt")
        return list(p)

    @property
    def max_new_tokens(self) -> int | None:
        return 16 if self.max_tokens is None else self.max_tokens  # OpenAI's default for completions

