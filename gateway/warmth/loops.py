"""The warmth tracker's two background loops, started from the app's lifespan (by
``gateway.routing.warmth_service``) and cancelled on shutdown; every worker may run them,
the tier's lease lets one act.

``run_keepwarm`` touches each tier whose keep-warm schedule (``gateway.warmth.schedule``) is
due, so it does not scale to zero inside its windows.

``run_recovery`` brings a down tier back by itself, for tiers whose probes are free. A down
``openai`` or ``local`` tier (or a Modal tier kept at one container or more) is tried with
one ``GET /health`` each time its backoff runs out (``WarmthTracker.trigger_trial``):
healthy makes it warm, anything else keeps it down for twice as long, up to the cap. A
scale-to-zero Modal tier is not probed here (a probe boots a GPU); its trial is the first
request after the backoff (``gateway.routing.dispatch``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.warmth.tracker import Probe, WarmthTracker
from gateway.warmth.types import RECOVERY_TICK_S

log = logging.getLogger(__name__)

KEEPWARM_TICK_S = 30.0  # 10 % of the shortest scale-down window (300 s): touches land in time


async def run_recovery(
    tracker: WarmthTracker,
    probes: Mapping[str, Probe],
    *,
    interval_s: float = RECOVERY_TICK_S,
    ticks: int | None = None,
) -> None:
    """Every ``interval_s``, start the trial of each free-probe tier that is due. ``ticks``
    bounds the loop (tests)."""
    done = 0
    while ticks is None or done < ticks:
        done += 1
        for tier, probe in probes.items():
            try:
                if await tracker.trial_due(tier):
                    log.info("recovery: trying down tier %s", tier)
                    tracker.trigger_trial(tier, probe)
            except Exception as exc:  # noqa: BLE001 - one bad tick must not end recovery
                log.warning("recovery: tier %s skipped this tick (%s)", tier, type(exc).__name__)
        await tracker.clock.sleep(interval_s)


async def run_keepwarm(
    tracker: WarmthTracker,
    probes: Mapping[str, Probe],
    *,
    interval_s: float = KEEPWARM_TICK_S,
    ticks: int | None = None,
) -> None:
    """Touch each tier whose keep-warm is due, every ``interval_s``; start it from the app's
    lifespan and cancel it on shutdown. Each tick only triggers warm-ups (single-flight
    across workers: all workers may run this loop and one of them touches), so one tier's
    seven-minute boot never delays another's touch. ``ticks`` bounds the loop (tests)."""
    done = 0
    while ticks is None or done < ticks:
        done += 1
        for tier, probe in probes.items():
            try:
                if await tracker.keepwarm_due(tier):
                    log.info("keep-warm: touching tier %s", tier)
                    tracker.trigger_warm_up(tier, probe)
            except Exception as exc:  # noqa: BLE001 - one bad tick must not end keep-warm
                log.warning("keep-warm: tier %s skipped this tick (%s)", tier, type(exc).__name__)
        await tracker.clock.sleep(interval_s)
