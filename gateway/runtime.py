"""What the app holds while it runs: built by the lifespan, reached by handlers through
``request.app.state.runtime``. No module-level state anywhere else."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from gateway.dispatch import Dispatcher
from gateway.observability import Metrics
from gateway.redact import RedactingFilter, Redactor
from gateway.schema_check import SchemaChecker
from gateway.serving import follow_supervisor
from gateway.settings import Settings
from gateway.tierstate import TierStates
from gateway.upstream import TierClient


@dataclass
class Runtime:
    settings: Settings
    clients: dict[str, TierClient]
    warmth: TierStates
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
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.warmth.aclose()
        for client in self.clients.values():
            await client.aclose()
        if self._log_redaction is not None:
            self._log_redaction.uninstall()

    async def status(self) -> dict[str, Any]:
        return await self.warmth.status(self.metrics.counts())
