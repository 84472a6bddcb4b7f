"""Exponential backoff with full jitter (as sdk/ts/src/core/backoff.ts): spreads reconnect storms."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    initial_s: float = 0.05
    max_s: float = 2.0
    multiplier: float = 2.0


class Backoff:
    def __init__(self, policy: BackoffPolicy = BackoffPolicy(), rand: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._random = rand
        self._attempt = 0

    def next_delay_s(self) -> float:
        ceiling_s = min(self._policy.max_s, self._policy.initial_s * self._policy.multiplier**self._attempt)
        self._attempt += 1
        return ceiling_s / 2 + self._random() * ceiling_s / 2

    def reset(self) -> None:
        self._attempt = 0
