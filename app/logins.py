"""Login throttling: after ``login_attempts`` failures for a name or from an address, each next
try waits, the wait doubling from 1 s up to 15 minutes; a success clears the name and the
address. Kept in the web process's memory (one process per studio: ``ftstudio web``/``up``),
so a restart forgets it, as a lockout should not outlive a restart by an admin."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

MAX_WAIT_SECONDS = 15 * 60


@dataclass
class _Record:
    failures: int = 0
    until: float = 0.0  # monotonic time before which no try is taken


class LoginThrottle:
    def __init__(self, allowed_failures: int, clock=time.monotonic) -> None:
        self.allowed_failures = allowed_failures
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, name: str, address: str) -> float:
        """How long the name or the address must still wait before a try (0: try now)."""
        now = self.clock()
        with self._lock:
            waits = [r.until - now for key in _keys(name, address) if (r := self._records.get(key))]
        return max([0.0, *waits])

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in _keys(name, address):
                record = self._records.setdefault(key, _Record())
                record.failures += 1
                over = record.failures - self.allowed_failures
                if over >= 0:
                    record.until = now + min(2.0**over, MAX_WAIT_SECONDS)
            if len(self._records) > 100_000:  # bounded memory: forget who waits no more
                self._records = {k: r for k, r in self._records.items() if r.until > now}

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            for key in _keys(name, address):
                self._records.pop(key, None)


def _keys(name: str, address: str) -> list[str]:
    keys = [f"address:{address}"]
    if name:
        keys.append(f"name:{name.strip().lower()}")
    return keys
