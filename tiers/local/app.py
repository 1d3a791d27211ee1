"""The local tier's HTTP surface: a Litestar app that answers like vLLM's OpenAI server.

>>> app = create_app(LocalTierConfig.from_argv([]), on_ready=print_ready, on_fatal=stop)

The app listens at once and loads the model on a background thread (``/health`` is 503
until then). Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``,
``GET /metrics``. Every error body is vLLM's envelope (``protocol.error_body``); nothing
answers with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.response import Stream

from tiers.local.config import LocalTierConfig
from tiers.local.jobs import (
    Completion,
    GenerationCancelled,
    GrammarError,
    JobSpec,
    Prepared,
    Sampling,
)
from tiers.local.metrics import Metrics
from tiers.local.model_store import ModelStore, apply_offline_env
from tiers.local.protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    FinishReason,
    ModelCard,
    ModelList,
    RequestRejected,
    ToolCall,
    Usage,
    error_body,
)
from tiers.local.scheduler import ClientGone, QueueFull, Scheduler, ShuttingDown
from tiers.local.streaming import DONE, ChunkWriter, Opened, event, open_stream

if TYPE_CHECKING:
    from tiers.local.engine import Engine

log = logging.getLogger("tiers.local")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Job:
    """One request, checked and prepared: what the queue runs."""

    req: ChatCompletionRequest
    spec: JobSpec
    engine: Engine
    prepared: Prepared
    sampling: Sampling


class LocalTier:
    """The state behind the routes: the engine once loaded, the queue, the counters."""

    def __init__(self, config: LocalTierConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.scheduler = Scheduler(config.max_queue)
        self.engine: Engine | None = None
        self.created = int(time.time())
        self._started = time.perf_counter()

    def load(self) -> None:
        """Convert (first run) and load the model; runs on the loader thread."""
        apply_offline_env()
        folder = ModelStore(self.config.model_cache).ensure()
        from tiers.local.engine import Engine  # torch is imported here, not at startup

        self.engine = Engine.load(folder, threads=self.config.threads)
        self.metrics.load_seconds = time.perf_counter() - self._started

    async def prepare(self, request: Request[Any, Any, Any]) -> Job:
        """Everything before the queue: decode, check, tokenize, compile the grammar."""
        try:
            req = msgspec.json.decode(await request.body(), type=ChatCompletionRequest)
        except msgspec.DecodeError as exc:  # ValidationError included: both are the client's
            raise RequestRejected(str(exc)) from exc
        spec = JobSpec.from_request(req)
        engine = self.engine
        if engine is None:
            raise RequestRejected(
                "the model is still loading", status=503, headers={"Retry-After": "5"}
            )
        try:
            prepared = await asyncio.to_thread(engine.prepare, spec.messages, spec.grammar)
        except GrammarError as exc:
            where = "tools" if spec.tools is not None and spec.tools.mode != "auto" else None
            raise RequestRejected(
                f"Invalid JSON schema in {where or 'response_format'}: {exc}",
                param=where or "response_format",
            ) from exc
        except ValueError as exc:  # the chat template refusing the messages
            raise RequestRejected(str(exc), param="messages") from exc
        sampling = spec.sampling(len(prepared.prompt_ids), max_model_len=self.config.max_model_len)
        return Job(req, spec, engine, prepared, sampling)

    async def complete(self, job: Job, request: Request[Any, Any, Any]) -> ChatCompletionResponse:
        def work(cancel: threading.Event) -> Completion:
            return self._generate(job, cancel)

        with self._admission():
            done = await self.scheduler.run(work, until=lambda: _disconnect(request))
        return ChatCompletionResponse(
            model=job.req.model or self.config.model_id,
            choices=[answer_choice(done, job.spec)],
            usage=Usage(
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                total_tokens=done.prompt_tokens + done.completion_tokens,
            ),
        )

    async def open_stream(self, job: Job) -> Opened:
        """Queue the job and wait for its first settled text: refusals are still statuses."""
        # Tool calls go out whole at the end: no piece of text is streamed for them.
        streams_text = job.spec.tools is None

        def run(on_text: Callable[[str], None]) -> Awaitable[Completion]:
            def work(cancel: threading.Event) -> Completion:
                return self._generate(job, cancel, on_text if streams_text else None)

            return self.scheduler.run(work)

        with self._admission():
            return await open_stream(run)

    async def events(self, job: Job, opened: Opened) -> AsyncIterator[bytes]:
        """The SSE body: a role chunk, the text as it is settled, the finish, usage, [DONE].
        Cancelled (the client hung up): the job is cancelled at its next token."""
        options = job.req.stream_options
        writer = ChunkWriter(
            job.req.model or self.config.model_id, options is not None and options.include_usage
        )
        try:
            yield writer.chunk({"role": "assistant", "content": ""})
            sent = 0
            async for piece in opened.rest():
                sent += len(piece)
                yield writer.chunk({"content": piece})
            done = opened.job.result()
            choice = answer_choice(done, job.spec)
            if choice.message.tool_calls:
                calls = [
                    {"index": i, **msgspec.to_builtins(call)}
                    for i, call in enumerate(choice.message.tool_calls)
                ]
                yield writer.chunk({"tool_calls": calls})
            elif done.text[sent:]:
                yield writer.chunk({"content": done.text[sent:]})
            yield writer.chunk({}, choice.finish_reason)
            if writer.include_usage:
                yield writer.usage(done)
        except (GenerationCancelled, ShuttingDown):
            yield event(error_body(503, "the local tier is shutting down"))
        except Exception:  # the status line is gone: an event is all that is left
            log.exception("a streamed generation failed")
            self.metrics.count_request("error")
            yield event(error_body(500, "internal error in the local tier"))
        finally:
            if not opened.job.done():  # the client hung up mid-stream
                self.metrics.count_request("cancelled")
                opened.cancel()  # stops the generation at its next token
        yield DONE

    @contextmanager
    def _admission(self) -> Iterator[None]:
        """The scheduler's refusals as the statuses vLLM would answer."""
        try:
            yield
        except QueueFull as exc:
            raise RequestRejected(
                f"The local tier is busy: {self.scheduler.max_queue} requests are already "
                "waiting. Retry later.",
                status=429,
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from exc
        except ShuttingDown as exc:
            raise RequestRejected("the local tier is shutting down", status=503) from exc

    def _generate(
        self, job: Job, cancel: threading.Event, on_text: Callable[[str], None] | None = None
    ) -> Completion:
        try:
            done = job.engine.generate(job.prepared, job.sampling, cancel, on_text)
        except GenerationCancelled as exc:
            self.metrics.add_partial(exc.tokens, exc.seconds)
            raise
        self.metrics.record(done)
        return done


def answer_choice(done: Completion, spec: JobSpec) -> Choice:
    """The choice as vLLM words it: tool calls pulled out of the text, when tools were on."""
    finish: FinishReason = "length" if done.finish_reason == "length" else "stop"
    content: str | None = done.text
    calls: list[ToolCall] = []
    if spec.tools is not None and finish != "length":  # a cut call is no call
        content, calls = spec.tools.calls(done.text)
        if calls:
            finish = "tool_calls"
    return Choice(
        index=0,
        message=AssistantMessage(content=content, tool_calls=calls),
        finish_reason=finish,
        stop_reason=done.stop_reason,
    )


async def _disconnect(request: Request[Any, Any, Any]) -> None:
    """Returns once the client has hung up (the body is already read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str, param: str | None = None, **headers: str) -> Response[Any]:
    return Response(
        msgspec.json.encode(error_body(status, message, param)),
        status_code=status,
        media_type="application/json",
        headers=headers or None,
    )


def create_app(
    config: LocalTierConfig,
    *,
    on_ready: Callable[[LocalTier], None] = lambda tier: None,
    on_fatal: Callable[[BaseException], None] = lambda exc: None,
) -> Litestar:
    """The app, with the model loading in the background from lifespan start; its
    ``LocalTier`` is ``app.state.tier``."""
    tier = LocalTier(config)

    def load() -> None:
        try:
            tier.load()
        except BaseException as exc:
            log.exception("the local tier could not load its model")
            on_fatal(exc)
            return
        on_ready(tier)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # A daemon thread: SIGTERM during a first-run conversion must not wait 40 s for it
        # (the conversion writes to a temporary folder, so nothing half-done is left visible).
        threading.Thread(target=load, name="local-tier-load", daemon=True).start()
        try:
            yield
        finally:
            await asyncio.to_thread(tier.scheduler.shutdown)

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            job = await tier.prepare(request)
            if job.req.stream:
                opened = await tier.open_stream(job)
                return Stream(
                    tier.events(job, opened),
                    media_type="text/event-stream",
                    headers={"cache-control": "no-cache"},
                )
            answer = await tier.complete(job, request)
        except RequestRejected as exc:
            outcome = {429: "queue_full", 503: "unavailable"}.get(exc.status, "bad_request")
            tier.metrics.count_request(outcome)
            return _error(exc.status, exc.message, exc.param, **exc.headers)
        except ClientGone:
            tier.metrics.count_request("cancelled")
            return _error(400, "the client disconnected before the answer was ready")
        return Response(msgspec.json.encode(answer), media_type="application/json")

    @get("/v1/models")
    async def models() -> Response[Any]:
        card = ModelCard(id=config.model_id, max_model_len=config.max_model_len,
                         created=tier.created, root=config.model_id)  # fmt: skip
        return Response(msgspec.json.encode(ModelList([card])), media_type="application/json")

    @get("/health")
    async def health() -> Response[Any]:
        if tier.engine is None:
            return _error(503, "the model is loading", **{"Retry-After": "5"})
        return Response(b'{"status":"ok"}', media_type="application/json")

    @get("/metrics")
    async def metrics() -> Response[str]:
        text = tier.metrics.render(
            queue_depth=tier.scheduler.waiting,
            running=tier.scheduler.running,
            capacity=config.max_queue,
        )
        return Response(text, media_type=PROMETHEUS_TEXT)

    def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        return _error(exc.status_code, exc.detail)

    def unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        log.error("unhandled error", exc_info=exc)
        tier.metrics.count_request("error")
        return _error(500, "internal error in the local tier")

    return Litestar(
        route_handlers=[chat, models, health, metrics],
        lifespan=[lifespan],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        openapi_config=None,
        debug=False,
        state=State({"tier": tier}),
    )
