import pytest

from services.gateway.core.ratelimit import RateLimited, RateLimiter, RateLimits, address_key


def test_a_burst_goes_through_then_requests_are_refused_until_tokens_come_back():
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.take("t", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("t", now=10.0) == pytest.approx(0.5)  # one token comes back in 1/rate s
    assert limiter.take("t", now=10.25) == pytest.approx(0.25)  # a refusal costs nothing
    assert limiter.take("t", now=10.5) == 0.0
    assert limiter.take("t", now=10.5) > 0


def test_tokens_refill_at_the_rate_up_to_the_burst_only():
    limiter = RateLimiter(rate=10, burst=5)
    for _ in range(5):
        limiter.take("t", now=0.0)
    assert limiter.wait("t", now=0.0) > 0
    limiter.take("t", now=1000.0)  # a long pause refills to the burst, not to 10,000
    assert [limiter.take("t", now=1000.0) for _ in range(4)] == [0.0] * 4
    assert limiter.take("t", now=1000.0) == pytest.approx(0.1)


def test_keys_have_buckets_of_their_own():
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("alice", now=0.0) == 0.0
    assert limiter.take("alice", now=0.0) > 0
    assert limiter.take("bob", now=0.0) == 0.0


def test_wait_takes_nothing():
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.wait("t", now=0.0) == 0.0
    assert limiter.wait("t", now=0.0) == 0.0
    assert limiter.take("t", now=0.0) == 0.0
    assert limiter.wait("t", now=0.0) == pytest.approx(1.0)


def test_rate_zero_is_no_limit():
    limiter = RateLimiter(rate=0, burst=0)
    assert all(limiter.take("t", now=0.0) == 0.0 for _ in range(10_000))
    assert not limiter.buckets


def test_the_number_of_buckets_is_bounded_and_the_least_recently_used_goes():
    limiter = RateLimiter(rate=1, burst=1, max_keys=2)
    limiter.take("a", now=0.0)
    limiter.take("b", now=0.0)
    limiter.take("a", now=0.0)  # refused, but a is now the most recently seen
    limiter.take("c", now=0.0)
    assert list(limiter.buckets) == ["a", "c"]


def test_a_burst_below_one_request_is_a_configuration_error():
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(rate=5, burst=0)


@pytest.mark.parametrize("seconds, header", [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")])
def test_retry_after_is_whole_seconds_rounded_up(seconds, header):
    assert RateLimited("slow down", seconds).retry_after_header == header


def test_many_addresses_cannot_make_a_tokens_bucket_be_forgotten():
    limits = RateLimits(rate=1, burst=1, max_keys=2)
    assert limits.tokens.take("alice", now=0.0) == 0.0
    for n in range(10):  # a client churning through source addresses
        limits.addresses.take(f"127.0.0.{n}", now=0.0)
    assert limits.tokens.take("alice", now=0.0) > 0  # still empty, not forgotten and refilled


@pytest.mark.parametrize("host, key", [
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("192.0.2.7", "192.0.2.7"),
    ("/run/scns.sock", "/run/scns.sock"),
])
def test_an_ipv6_client_is_keyed_by_its_64_and_an_ipv4_one_by_its_address(host, key):
    assert address_key(host) == key
