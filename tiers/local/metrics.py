"""Counters for ``GET /metrics``, written in the Prometheus text format by hand.

>>> metrics = Metrics()
>>> metrics.count_request("ok")
>>> "local_tier_requests_total" in metrics.render(queue_depth=0, running=0, capacity=5)
True

Updated from the event loop and from the generation thread, hence the lock.
"""

from __future__ import annotations

import threading
from collections import Counter

from tiers.local.jobs import Completion

OUTCOMES = ("ok", "bad_request", "queue_full", "cancelled", "unavailable", "error")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})
        self._finish: Counter[str] = Counter({"stop": 0, "length": 0})
        self._prompt_tokens = 0
        self._generated_tokens = 0
        self._generation_seconds = 0.0
        self._last_tokens_per_second = 0.0
        self.load_seconds: float | None = None

    def count_request(self, outcome: str) -> None:
        with self._lock:
            self._requests[outcome] += 1

    def record(self, done: Completion) -> None:
        with self._lock:
            self._requests["ok"] += 1
            self._finish[done.finish_reason] += 1
            self._prompt_tokens += done.prompt_tokens
            self._generated_tokens += done.completion_tokens
            self._generation_seconds += done.seconds
            if done.seconds > 0:
                self._last_tokens_per_second = done.completion_tokens / done.seconds

    def add_partial(self, tokens: int, seconds: float) -> None:
        """Work done for a job that was then cancelled: the CPU was spent all the same."""
        with self._lock:
            self._generated_tokens += tokens
            self._generation_seconds += seconds

    def render(self, *, queue_depth: int, running: int, capacity: int) -> str:
        with self._lock:
            lines: list[str] = []
            _family(lines, "requests_total", "counter", "Chat completion requests by outcome.")
            lines += [
                f'local_tier_requests_total{{outcome="{k}"}} {v}'
                for k, v in sorted(self._requests.items())
            ]
            _family(lines, "finish_total", "counter", "Completed generations by finish_reason.")
            lines += [
                f'local_tier_finish_total{{reason="{k}"}} {v}'
                for k, v in sorted(self._finish.items())
            ]
            scalars = [
                ("prompt_tokens_total", "counter", "Prompt tokens processed.", self._prompt_tokens),
                ("generation_tokens_total", "counter", "Tokens generated.", self._generated_tokens),
                ("generation_seconds_total", "counter", "Seconds spent generating.",
                 self._generation_seconds),
                ("tokens_per_second", "gauge", "Decode speed of the last completed request.",
                 self._last_tokens_per_second),
                ("queue_depth", "gauge", "Requests waiting for the generation thread.",
                 queue_depth),
                ("running", "gauge", "Requests generating now (0 or 1).", running),
                ("queue_capacity", "gauge", "Waiting requests allowed before 429.", capacity),
                ("model_loaded", "gauge", "1 once the model is loaded.",
                 int(self.load_seconds is not None)),
                ("model_load_seconds", "gauge", "Seconds from start to model loaded.",
                 self.load_seconds or 0.0),
            ]  # fmt: skip
            for name, kind, help_text, value in scalars:
                _family(lines, name, kind, help_text)
                lines.append(f"local_tier_{name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP local_tier_{name} {help_text}")
    lines.append(f"# TYPE local_tier_{name} {kind}")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
