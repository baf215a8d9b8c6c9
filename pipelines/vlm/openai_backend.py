"""The `openai` backend: any OpenAI-compatible chat completions server, over httpx."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipelines.vlm.confidence import logprobs_from_openai, mean_probability
from pipelines.vlm.parsing import ParsedOutput, parse_model_output
from pipelines.vlm.prompt import build_prompt
from pipelines.vlm.registry import Backend, BackendError, error_text, register_backend

if TYPE_CHECKING:
    import httpx

    from pipelines.config import BackendConfig
    from pipelines.vlm.types import VLMRequest

logger = logging.getLogger(__name__)

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 0.5
MAX_RETRY_AFTER_S = 10.0


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _BadRequest(BackendError):
    """HTTP 400: the server refused the request as sent."""


@register_backend("openai")
class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat completions server (vLLM, Ollama, cloud) over httpx."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        max_new_tokens: int = 96,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        super().__init__(config, max_new_tokens=max_new_tokens)
        self.backoff_base_s = backoff_base_s
        self.base_url = (config.base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        self.timeout_s = float(config.timeout_s)
        self._api_key = config.api_key.get_secret_value() if config.api_key else None
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._logprobs = True  # ask for token logprobs (confidence) until a server refuses them

    def _http(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        # an AsyncClient's connection pool belongs to one event loop
        if self._client is None or self._client_loop is not loop:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(timeout=self.timeout_s, headers=headers)
            self._client_loop = loop
        return self._client

    def _body(self, request: VLMRequest) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": build_prompt(request)}]
        for frame in request.frames:
            url = "data:image/jpeg;base64," + base64.b64encode(frame).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": url}})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            **({"logprobs": True} if self._logprobs else {}),
        }

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}/chat/completions"
        secrets = [self._api_key] if self._api_key else []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self._http().post(url, json=body)
            except httpx.TimeoutException as exc:  # a hung server: no retry, the deadline matters
                raise BackendError(f"timeout after {self.timeout_s:g} s") from exc
            except httpx.TransportError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise BackendError(error_text(exc, secrets)) from exc
                await asyncio.sleep(self.backoff_base_s * 2 ** (attempt - 1))
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if attempt == MAX_ATTEMPTS:
                    raise BackendError(f"HTTP {status} after {attempt} attempts")
                delay = self.backoff_base_s * 2 ** (attempt - 1)
                retry_after = _retry_after_s(response.headers.get("retry-after"))
                if retry_after is not None:
                    delay = max(delay, retry_after)
                delay = min(delay, MAX_RETRY_AFTER_S)
                logger.info("%s: HTTP %d, retry %d in %.2f s", self.name, status, attempt, delay)
                await asyncio.sleep(delay)
                continue
            if status == 400:
                raise _BadRequest(f"HTTP {status}")
            if status >= 400:
                raise BackendError(f"HTTP {status}")
            try:
                data = response.json()
            except ValueError as exc:
                raise BackendError("response is not JSON") from exc
            if not isinstance(data, dict):
                raise BackendError("response is not a JSON object")
            return data
        raise BackendError("unreachable")  # pragma: no cover

    async def _describe_one(self, request: VLMRequest) -> ParsedOutput:
        data = await self._post_asking_logprobs(self._body(request))
        usage = data.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.generated_tokens += usage["completion_tokens"]
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError("response has no choices[0].message.content") from exc
        if isinstance(content, list):  # some servers return content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BackendError("message content is not text")
        logprobs = logprobs_from_openai(data["choices"][0])
        scored = mean_probability(logprobs) if logprobs else None
        return parse_model_output(content, token_confidence=scored, scored_by="logprobs")

    async def _post_asking_logprobs(self, body: dict[str, Any]) -> dict[str, Any]:
        """Post `body`; a server that answers 400 to `logprobs` is asked again without them,
        and when that works, never asked for them again (confidence then has no token data)."""
        try:
            return await self._post(body)
        except _BadRequest:
            if "logprobs" not in body:
                raise
        retry = {k: v for k, v in body.items() if k != "logprobs"}
        data = await self._post(retry)
        if self._logprobs:
            self._logprobs = False
            logger.warning("%s: the server refuses `logprobs`; confidence falls back", self.name)
        return data

    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        """One chat completion per request, all in flight at once."""
        answers = await asyncio.gather(
            *(self._describe_one(r) for r in requests), return_exceptions=True
        )
        out: list[ParsedOutput | Exception] = []
        for answer in answers:
            if isinstance(answer, ParsedOutput | Exception):
                out.append(answer)
            else:  # CancelledError and other BaseExceptions propagate
                raise answer
        return out

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
