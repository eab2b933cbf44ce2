from services.gateway.core.health import ProjectionWatch


def test_a_busy_projector_is_healthy_and_a_stalled_one_is_not():
    watch = ProjectionWatch(stall_after_s=30, max_lag=1000)
    assert watch.check(last_seq=100, position=100, now=0) == (True, "ok: 0 events behind")
    assert watch.check(last_seq=150, position=120, now=10)[0]  # behind, but moving
    assert watch.check(last_seq=160, position=130, now=35)[0]
    healthy, text = watch.check(last_seq=170, position=130, now=70)  # no progress for 35 s
    assert not healthy and text.startswith("stalled: 40 events behind")
    assert watch.check(last_seq=170, position=170, now=71) == (True, "ok: 0 events behind")


def test_far_behind_is_unhealthy_even_while_moving():
    watch = ProjectionWatch(stall_after_s=30, max_lag=1000)
    healthy, text = watch.check(last_seq=5000, position=100, now=0)
    assert not healthy and text == "lagging: 4900 events behind the log"
