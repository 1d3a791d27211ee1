"""What the app holds while it runs: built by the lifespan, reached by handlers through
``request.app.state.runtime``. No module-level state anywhere else."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from gateway.access.spend import spend_by_tier
from gateway.clock import cancel_and_wait
from gateway.http.observability import Metrics
from gateway.redact import RedactingFilter, Redactor
from gateway.routing.dispatch import Dispatcher
from gateway.routing.tier_client import TierClient
from gateway.routing.warmth_service import WarmthService
from gateway.settings import Settings
from gateway.structured.preflight import SchemaChecker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    clients: dict[str, TierClient]
    warmth: WarmthService
    dispatcher: Dispatcher
    checker: SchemaChecker
    metrics: Metrics
    _watchdog: asyncio.Task[None] | None = field(default=None, init=False)
    _log_redaction: RedactingFilter | None = field(default=None, init=False)

    async def start(self) -> None:
        # Log lines may quote a tier (a traceback, a warning): none carries a secret.
        self._log_redaction = RedactingFilter(Redactor.for_settings(self.settings)).install()
        await self.warmth.start()
        if self.settings.supervisor_pid is not None:
            self._watchdog = asyncio.create_task(follow_supervisor(self.settings.supervisor_pid))

    async def aclose(self) -> None:
        if self._watchdog is not None:
            await cancel_and_wait(self._watchdog)
        await self.warmth.aclose()
        for client in self.clients.values():
            await client.aclose()
        if self._log_redaction is not None:
            self._log_redaction.uninstall()

    async def status(self) -> dict[str, Any]:
        out = await self.warmth.status(self.metrics.counts())
        for tier, keys in spend_by_tier(self.metrics.registry).items():
            if tier in out:  # what each API key spent on this tier (gateway.access.spend)
                out[tier]["keys"] = keys
        return out


async def follow_supervisor(pid: int, every_s: float = 1.0) -> None:
    """In a worker of ``serve --workers N``: once the supervisor ``pid`` is gone (killed hard,
    so it could not stop its workers), drain and stop, as on SIGTERM. Otherwise an orphaned
    worker would go on serving the port and block the next ``gateway serve`` from binding it."""
    while os.getppid() == pid:  # noqa: ASYNC110  nothing signals a parent's death: poll
        await asyncio.sleep(every_s)
    log.warning("the gateway serve supervisor (pid %d) is gone: this worker stops", pid)
    os.kill(os.getpid(), signal.SIGTERM)
