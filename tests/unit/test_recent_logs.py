"""The output of ended jobs kept by the gateway: fresh for a few seconds, bounded in size, least
recently read dropped first."""

from services.gateway.core.recent_logs import RecentLogs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_output_is_kept_until_it_is_older_than_its_age():
    clock = Clock()
    recent = RecentLogs(clock, max_age_s=5)
    recent.put(7, "out", "err")
    clock.now += 5
    assert recent.get(7) == ("out", "err")
    clock.now += 0.1
    assert recent.get(7) is None
    assert recent.characters == 0


def test_the_least_recently_read_output_goes_first_when_the_size_is_reached():
    recent = RecentLogs(Clock(), max_characters=10)
    recent.put(1, "aaaa", "")
    recent.put(2, "bbbb", "")
    assert recent.get(1) == ("aaaa", "")  # now 2 is the least recently read
    recent.put(3, "cc", "cc")
    assert recent.get(2) is None
    assert recent.get(1) == ("aaaa", "") and recent.get(3) == ("cc", "cc")
    assert recent.characters == 8


def test_an_output_larger_than_the_whole_room_is_not_kept_and_evicts_nothing():
    recent = RecentLogs(Clock(), max_characters=10)
    recent.put(1, "aaaa", "")
    recent.put(2, "x" * 11, "")
    assert recent.get(2) is None and recent.get(1) == ("aaaa", "")


def test_an_output_put_again_replaces_the_kept_one_and_its_size():
    recent = RecentLogs(Clock(), max_characters=10)
    recent.put(1, "aaaa", "")
    recent.put(1, "aaaaaaaa", "b")
    assert recent.get(1) == ("aaaaaaaa", "b") and recent.characters == 9
