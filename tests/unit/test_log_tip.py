"""Where a reader of the log is at its tip: it then acts (applies a batch, runs a pass) once for
all the messages that arrived together."""

from types import SimpleNamespace

from shared.bus import at_tip


def delivered(num_pending: int) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(num_pending=num_pending))


def test_only_the_last_message_of_a_list_is_at_the_tip():
    first, last = delivered(0), delivered(0)  # the first was the tip when delivered; the second came after
    assert [at_tip(msg, [first, last]) for msg in (first, last)] == [False, True]


def test_a_list_is_not_at_the_tip_while_more_was_stored_after_its_last_message():
    arrived = [delivered(5), delivered(4)]
    assert not any(at_tip(msg, arrived) for msg in arrived)
