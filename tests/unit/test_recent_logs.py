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


def test_the_oldest_output_goes_first_when_the_size_is_reached():
    recent = RecentLogs(Clock(), max_characters=10)
    recent.put(1, "aaaa", "")
    recent.put(2, "bbbb", "")
    recent.put(3, "cc", "cc")
    assert recent.get(1) is None
    assert recent.get(2) == ("bbbb", "") and recent.get(3) == ("cc", "cc")
    assert recent.characters == 8


def test_expired_outputs_go_as_new_ones_come_even_unread():
    clock = Clock()
    recent = RecentLogs(clock, max_age_s=5)
    for job_id in range(1000):
        recent.put(job_id, "hi\n", "")
    clock.now += 6
    recent.put(1000, "hi\n", "")
    assert recent.characters == 3 and recent.get(1000) == ("hi\n", "")


def test_an_output_larger_than_the_whole_room_is_not_kept():
    recent = RecentLogs(Clock(), max_characters=10)
    recent.put(1, "aaaa", "")
    recent.put(2, "x" * 11, "")
    assert recent.get(2) is None and recent.get(1) == ("aaaa", "")


def test_an_output_put_again_replaces_the_kept_one_and_its_size():
    recent = RecentLogs(Clock(), max_characters=10)
    recent.put(1, "aaaa", "")
    recent.put(1, "aaaaaaaa", "b")
    assert recent.get(1) == ("aaaaaaaa", "b") and recent.characters == 9
