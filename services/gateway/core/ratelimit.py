"""Rate limiting (pure): one token bucket per key, refilled at `rate` a second up to `burst`.

The gateway keys a bucket by the bearer token's hash, or by the client's address for requests
without a valid token (`RateLimits`). Time comes in as `now` (seconds, any monotonic origin), so
tests run on a fake clock.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

MAX_KEYS = 100_000  # buckets kept; the least recently used is forgotten (it comes back full)


class RateLimited(Exception):
    """429: the key's bucket is empty; a token comes back after `retry_after_s`."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Retry-After in whole seconds (RFC 9110 allows no fractions), never 0."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float  # when `tokens` was counted


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_keys: int = MAX_KEYS) -> None:
        if rate > 0 and burst < 1:
            raise ValueError("a rate limit needs a burst of at least 1 request")
        self.rate = rate  # 0: no limit
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may make a request (0.0: now), taking nothing."""
        if not self.enabled:
            return 0.0
        bucket = self._refilled(key, now)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: str, now: float) -> float:
        """Count one request of `key`: 0.0 when it may go ahead, else the seconds until it may
        (and nothing is counted: a refused request costs no token)."""
        waiting = self.wait(key, now)
        if waiting == 0.0 and self.enabled:
            self.buckets[key].tokens -= 1
        return waiting

    def _refilled(self, key: str, now: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(tokens=float(self.burst), at=now)
            if len(self.buckets) > self.max_keys:
                self.buckets.popitem(last=False)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = now
            self.buckets.move_to_end(key)
        return bucket


class RateLimits:
    """Token buckets and address buckets, in limiters of their own: whoever can make many keys of
    one kind (addresses: a local process has all of 127.0.0.0/8) pushes out only that kind's
    buckets, and cannot refill the other's by making them be forgotten."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_KEYS) -> None:
        self.tokens = RateLimiter(rate, burst, max_keys)
        self.addresses = RateLimiter(rate, burst, max_keys)


def address_key(host: str) -> str:
    """The client an address stands for: an IPv6 one by its /64 (a host is given a whole /64, so
    it could take a fresh address for every request), an IPv4 one (mapped into IPv6 too) by itself."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an IP address (a Unix socket's path): as it is
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
