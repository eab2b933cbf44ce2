"""The fold and the FIFO + First Fit policy, by example and by property."""

import copy
from datetime import datetime, timedelta, timezone

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.scheduler.core.capacity import FreeCapacity
from services.scheduler.core.policy import endings, fifo_first_fit, request_of
from services.scheduler.core.snapshot import decode_snapshot, encode_snapshot
from services.scheduler.core.state import LATE_SUBMISSION, SchedulerState, assume, evolve, replay
from shared.events import (
    JobAllocated,
    JobCancelled,
    JobCancelRequested,
    JobFinished,
    JobLost,
    JobRequeued,
    JobSpec,
    JobSubmitted,
    NodeDown,
    NodeDrained,
    NodeRegistered,
    NodeResumed,
    SchedulerElected,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def node(name, cpus=2, memory_mb=4096, partitions=("default",)):
    return NodeRegistered(node=name, cpus=cpus, memory_mb=memory_mb, partitions=list(partitions), arch="aarch64",
                          registered_at=NOW)


def submitted(cpus=1, memory_mb=100, partition="default", exclusive=False, requeue=False):
    spec = JobSpec(account="a", name="j", partition=partition, cwd="/w", stdout="o", stderr="e", script="true",
                   time_limit_s=0, cpus_per_task=cpus, memory_mb=memory_mb, exclusive=exclusive, requeue=requeue)
    return JobSubmitted(spec=spec, submitted_at=NOW)


def finished(job_id, node_name):
    return JobFinished(job_id=job_id, node=node_name, state="COMPLETED", exit_code="0:0", ended_at=NOW)


def run_policy(state):
    """One pass, its decisions assumed into the state (what the adapter does), as if they were
    the next events of the log."""
    decisions = fifo_first_fit(state, NOW)
    for offset, decision in enumerate(decisions, start=1):
        assume(state, decision, state.last_seq + offset)
    return decisions


def test_jobs_are_placed_first_fit_in_submission_order():
    state = replay([(1, node("n1")), (2, node("n2")), (3, submitted()), (4, submitted()), (5, submitted())])
    decisions = run_policy(state)
    assert [(d.job_id, d.node) for d in decisions] == [(3, "n1"), (4, "n1"), (5, "n2")]
    assert run_policy(state) == []  # nothing placed twice


def test_the_head_of_a_partition_blocks_the_jobs_behind_it():
    state = replay([(1, node("n1", cpus=2)), (2, submitted(cpus=2)), (3, submitted(cpus=2)), (4, submitted(cpus=1))])
    assert [d.job_id for d in run_policy(state)] == [2]
    assert run_policy(state) == []  # job 3 waits for 2 CPUs; job 4 waits behind it (strict FIFO)
    evolve(state, 5, finished(2, "n1"))
    assert [d.job_id for d in run_policy(state)] == [3]


def test_partitions_queue_independently():
    state = replay([(1, node("n1", cpus=1, partitions=["a"])), (2, node("n2", cpus=1, partitions=["b"])),
                    (3, submitted(partition="a")), (4, submitted(partition="a")), (5, submitted(partition="b"))])
    assert sorted((d.job_id, d.node) for d in run_policy(state)) == [(3, "n1"), (5, "n2")]


def test_exclusive_job_takes_the_whole_node_and_only_an_empty_one():
    state = replay([(1, node("n1", cpus=4)), (2, submitted()), (3, submitted(exclusive=True))])
    decisions = run_policy(state)
    assert [d.job_id for d in decisions] == [2]
    evolve(state, 4, finished(2, "n1"))
    (exclusive,) = run_policy(state)
    assert (exclusive.job_id, exclusive.cpus, exclusive.memory_mb) == (3, 4, 4096)


def test_memory_is_a_limit_too():
    state = replay([(1, node("n1", cpus=8, memory_mb=1000)), (2, submitted(memory_mb=600)), (3, submitted(memory_mb=600))])
    assert [d.job_id for d in run_policy(state)] == [2]


def test_down_nodes_get_nothing_and_cancel_of_a_pending_job_is_decided_here():
    state = replay([(1, node("n1")), (2, NodeDown(node="n1", reason="x", down_at=NOW)), (3, submitted()),
                    (4, JobCancelRequested(job_id=3, requested_at=NOW))])
    assert run_policy(state) == [JobCancelled(job_id=3, cancelled_at=NOW)]
    assert state.pending(3) is None and run_policy(state) == []


def test_a_submission_stored_after_its_gateway_gave_up_is_withdrawn_before_it_runs():
    late = JobSubmitted(spec=submitted().spec, submitted_at=NOW, accept_until=NOW + timedelta(seconds=3))
    on_time = JobSubmitted(spec=submitted().spec, submitted_at=NOW, accept_until=NOW + timedelta(seconds=3))
    state = replay([(1, node("n1")), (2, late, NOW + timedelta(seconds=9)), (3, on_time, NOW + timedelta(seconds=2))])
    decisions = run_policy(state)
    assert decisions[0] == JobCancelled(job_id=2, cancelled_at=NOW, reason=LATE_SUBMISSION)
    assert [d.job_id for d in decisions[1:]] == [3]


def test_the_jobs_of_a_node_declared_down_are_lost_and_their_resources_freed():
    state = replay([(1, node("n1", cpus=1)), (2, node("n2", cpus=1)), (3, submitted()), (4, submitted())])
    run_policy(state)
    evolve(state, 7, NodeDown(node="n1", reason="Not responding", down_at=NOW))
    (lost,) = run_policy(state)
    assert isinstance(lost, JobLost) and (lost.job_id, lost.node) == (3, "n1")
    assert state.nodes["n1"].used_cpus == 0 and 3 not in state.placed and state.placed[4].node == "n2"
    evolve(state, 8, submitted())
    assert run_policy(state) == []  # n1 is down, n2 is full


def test_a_decision_read_back_from_the_log_changes_nothing():
    state = replay([(1, node("n1")), (2, submitted())])
    (allocation,) = run_policy(state)
    before = (state.nodes["n1"].used_cpus, dict(state.placed))
    evolve(state, 3, allocation)  # the same decision, now read from the log
    assert (state.nodes["n1"].used_cpus, dict(state.placed)) == before


# ---- properties ----------------------------------------------------------------------------

job_requests = st.tuples(st.integers(1, 4), st.integers(1, 3000), st.sampled_from(["default", "gpu"]), st.booleans(),
                         st.booleans())
node_sizes = st.tuples(st.integers(1, 8), st.integers(500, 8000), st.sampled_from([("default",), ("gpu",), ("default", "gpu")]))


@st.composite
def histories(draw):
    """A random log: nodes register, jobs arrive, the policy runs, jobs finish, in any interleaving."""
    nodes = draw(st.lists(node_sizes, min_size=1, max_size=4))
    steps = draw(st.lists(st.one_of(
        st.tuples(st.just("submit"), job_requests),
        st.tuples(st.just("finish"), st.integers(0, 50)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("down"), st.integers(0, 3)),
        st.tuples(st.just("rejoin"), st.integers(0, 3)),
        st.tuples(st.just("drain"), st.integers(0, 3)),
        st.tuples(st.just("resume"), st.integers(0, 3)),
        st.tuples(st.just("schedule"), st.none()),
        st.tuples(st.just("elect"), st.integers(0, 2)),
    ), max_size=60))
    return nodes, steps


def build_log(nodes, steps, races=(), check_pass=lambda state, decisions: None):
    """Play the steps against a live scheduler state, recording the log it would have written.

    A live scheduler takes its decisions into its state at once and publishes them after; with
    `races`, another service's cancel request lands in the log in between. `check_pass` sees the
    state and the decisions of each pass before they are taken into it.
    """
    state, log, seq = SchedulerState(), [], 0

    def append(event):  # an event lands in the log, and the live scheduler reads it
        nonlocal seq
        seq += 1
        log.append((seq, event))
        evolve(state, seq, event)

    for index, (cpus, memory, partitions) in enumerate(nodes):
        append(node(f"n{index}", cpus, memory, partitions))
    for step, (kind, arg) in enumerate(steps):
        if kind == "submit":
            append(submitted(*arg))
        elif kind == "finish" and state.placed:
            job_id = sorted(state.placed)[arg % len(state.placed)]
            append(finished(job_id, state.placed[job_id].node))
        elif kind == "cancel" and log:
            append(JobCancelRequested(job_id=log[arg % len(log)][0], requested_at=NOW))
        elif kind == "elect":
            append(SchedulerElected(scheduler=f"s{arg}", elected_at=NOW))
        elif kind == "down":
            append(NodeDown(node=f"n{arg % len(nodes)}", reason="Not responding", down_at=NOW))
        elif kind == "rejoin":  # its executor registers it again, as it does after a restart
            append(node(f"n{arg % len(nodes)}", *nodes[arg % len(nodes)]))
        elif kind == "drain":
            append(NodeDrained(node=f"n{arg % len(nodes)}", by="admin", drained_at=NOW))
        elif kind == "resume":
            append(NodeResumed(node=f"n{arg % len(nodes)}", by="admin", resumed_at=NOW))
        elif kind == "schedule":
            decisions = fifo_first_fit(state, NOW)
            check_pass(state, decisions)
            race = bool(decisions) and step < len(races)
            for offset, decision in enumerate(decisions, start=1 + race):  # the seq each will be stored at
                assume(state, decision, seq + offset)
            if race:
                target = decisions[races[step] % len(decisions)].job_id
                append(JobCancelRequested(job_id=target, requested_at=NOW))
            for decision in decisions:
                append(decision)
    return state, log


@settings(max_examples=300, deadline=None)
@given(histories())
def test_never_over_commits_a_node(history):
    state, log = build_log(*history)
    for current in state.nodes.values():
        assert 0 <= current.used_cpus <= current.cpus
        assert 0 <= current.used_memory_mb <= current.memory_mb
        placed_here = [p for p in state.placed.values() if p.node == current.name]
        assert sum(p.cpus for p in placed_here) == current.used_cpus


@settings(max_examples=300, deadline=None)
@given(histories())
def test_fifo_within_a_partition(history):
    """Every allocation's partition-mates submitted before it were placed (or cancelled) first."""
    _, log = build_log(*history)
    partition_of = {seq: e.spec.partition for seq, e in log if isinstance(e, JobSubmitted)}
    decided: set[int] = set()
    for _, event in log:
        if isinstance(event, (JobAllocated, JobCancelled)):
            if isinstance(event, JobAllocated):
                earlier = [j for j, p in partition_of.items() if p == partition_of[event.job_id] and j < event.job_id]
                assert all(j in decided for j in earlier), (event.job_id, earlier, decided)
            decided.add(event.job_id)


@settings(max_examples=200, deadline=None)
@given(histories(), st.integers(0, 200))
def test_replaying_a_prefix_then_the_rest_equals_replaying_everything(history, cut):
    _, log = build_log(*history)
    cut = min(cut, len(log))
    whole = replay(log)
    resumed = replay(log[cut:], replay(log[:cut]))
    assert resumed == whole
    # Replaying the tail again (a redelivery) is harmless too.
    assert replay(log[cut:], resumed) == whole


def first_fit_by_scanning(state, now):
    """The policy as first written: every node looked at from the first, for every job."""
    decisions, planned = endings(state, now), {}
    for partition, queue in state.queues.items():
        candidates = [n for n in state.nodes.values() if n.alive and not n.drained and partition in n.partitions]
        for job in queue.values():
            if job.job_id in state.cancel_requested:
                continue

            def fits(candidate):
                cpus, memory_mb = request_of(candidate, job)
                taken_cpus, taken_memory_mb, taken_jobs = planned.get(candidate.name, (0, 0, 0))
                if job.exclusive and (candidate.jobs or taken_jobs):
                    return False
                return cpus <= candidate.free_cpus - taken_cpus and memory_mb <= candidate.free_memory_mb - taken_memory_mb

            chosen = next((n for n in candidates if fits(n)), None)
            if chosen is None:
                break
            cpus, memory_mb = request_of(chosen, job)
            taken_cpus, taken_memory_mb, taken_jobs = planned.get(chosen.name, (0, 0, 0))
            planned[chosen.name] = (taken_cpus + cpus, taken_memory_mb + memory_mb, taken_jobs + 1)
            decisions.append(JobAllocated(job_id=job.job_id, node=chosen.name, cpus=cpus, memory_mb=memory_mb,
                                          allocated_at=now, end_after=job.end_after))
    return decisions


@settings(max_examples=300, deadline=None)
@given(histories())
def test_the_index_places_every_job_where_a_scan_from_the_first_node_would(history):
    """The index of free capacity is only a faster way to the same node; a pass leaves it as it found it."""
    passes = []

    def check_pass(state, decisions):
        assert decisions == first_fit_by_scanning(state, NOW)
        rebuilt = FreeCapacity()
        rebuilt.rebuild(state.nodes.values())
        assert (state.capacity.names, state.capacity.trees) == (rebuilt.names, rebuilt.trees)
        passes.append(decisions)

    build_log(*history, check_pass=check_pass)
    assert len(passes) == sum(kind == "schedule" for kind, _ in history[1])


@st.composite
def racing_histories(draw):
    """Like `histories`, but other services' events may land in the log between a decision being
    taken (assumed at once by the live scheduler) and its own publication."""
    nodes, steps = draw(histories())
    races = draw(st.lists(st.integers(0, 50), max_size=len(steps)))
    return nodes, steps, races


@settings(max_examples=300, deadline=None)
@given(racing_histories())
# A cancel request landing between the requeue of its job (its node lost) being taken and published.
@example(([(1, 500, ("default",))], [("submit", (1, 1, "default", False, True)), ("schedule", None), ("down", 0),
                                     ("schedule", None)], [0, 0, 0, 0]))
def test_the_live_state_equals_a_replay_of_the_log_it_wrote(history):
    """A restarted scheduler (replay) must decide as the live one would: same state."""
    live, log = build_log(*history)
    assert replay(log) == live


def test_events_delivered_again_change_nothing_even_a_node_down_before_the_node_came_back():
    allocated = JobAllocated(job_id=2, node="n1", cpus=1, memory_mb=100, allocated_at=NOW)
    log = [(1, node("n1")), (2, submitted()), (3, NodeDown(node="n1", reason="gone", down_at=NOW)), (4, node("n1")),
           (5, allocated)]
    whole = replay(log)
    assert replay(log[2:], replay(log)) == whole and whole.lost == {} and 2 in whole.placed


def test_a_drained_node_gets_nothing_until_resumed():
    state = replay([(1, node("n1")), (2, NodeDrained(node="n1", by="admin", drained_at=NOW)), (3, submitted())])
    assert run_policy(state) == []
    evolve(state, 4, node("n1"))  # a re-registration does not end a drain
    assert run_policy(state) == []
    evolve(state, 5, NodeResumed(node="n1", by="admin", resumed_at=NOW))
    assert [d.job_id for d in run_policy(state)] == [3]


def test_an_allocation_stored_after_its_nodes_down_is_lost_on_replay_too():
    """Decided while the node looked alive, stored just after its NodeDown: a replaying scheduler
    must end it as the live one does, not leave it placed on a dead node forever."""
    log = [(1, node("n1")), (2, submitted()), (3, NodeDown(node="n1", reason="x", down_at=NOW)),
           (4, JobAllocated(job_id=2, node="n1", cpus=1, memory_mb=100, allocated_at=NOW))]
    state = replay(log)
    (lost,) = run_policy(state)
    assert isinstance(lost, JobLost) and lost.job_id == 2 and state.nodes["n1"].used_cpus == 0


@settings(max_examples=200, deadline=None)
@given(racing_histories(), st.integers(0, 200))
def test_a_snapshot_then_the_rest_of_the_log_equals_replaying_everything(history, cut):
    live, log = build_log(*history)
    cut = min(cut, len(log))
    restored = decode_snapshot(encode_snapshot(replay(log[:cut]), "log-1"), "log-1")
    assert replay(log[cut:], restored) == replay(log)
    # The live state, decisions assumed before they were read back, survives the round trip too.
    assert decode_snapshot(encode_snapshot(live, "log-1"), "log-1") == live


def test_a_snapshot_of_another_log_or_format_or_no_snapshot_at_all_is_refused():
    data = encode_snapshot(replay([(1, node("n1")), (2, submitted())]), "log-1")
    assert decode_snapshot(data, "log-1").last_seq == 2
    assert decode_snapshot(data, "log-2") is None
    assert decode_snapshot(b"\x93\x00\xa5log-1\x80", "log-1") is None  # format 0
    assert decode_snapshot(b"not a snapshot", "log-1") is None


def test_the_last_election_in_the_log_names_the_leader():
    state = replay([(1, SchedulerElected(scheduler="a", elected_at=NOW)),
                    (2, SchedulerElected(scheduler="b", elected_at=NOW))])
    assert (state.leader, state.election_seq) == ("b", 2)
    evolve(state, 1, SchedulerElected(scheduler="a", elected_at=NOW))  # read again: changes nothing
    assert (state.leader, state.election_seq) == ("b", 2)


def test_a_job_submitted_with_requeue_is_queued_again_when_its_node_is_lost():
    state = replay([(1, node("n1")), (2, node("n2")), (3, submitted(cpus=2, requeue=True)), (4, submitted(cpus=2))])
    first = run_policy(state)
    assert [(d.job_id, d.node, d.end_after) for d in first] == [(3, "n1", 0), (4, "n2", 0)]
    for seq, decision in enumerate(first, start=5):
        evolve(state, seq, decision)
    evolve(state, 7, NodeDown(node="n1", reason="x", down_at=NOW))
    evolve(state, 8, node("n3"))
    (requeued,) = run_policy(state)  # the lost run ends; the job is pending again, n1 free
    assert isinstance(requeued, JobRequeued) and (requeued.job_id, requeued.end_after) == (3, 0)
    assert state.pending(3).end_after == 9 and state.nodes["n1"].used_cpus == 0 and 3 not in state.placed
    (again,) = run_policy(state)  # its next run begins after the requeue, on a live node
    assert (again.job_id, again.node, again.end_after) == (3, "n3", 9)
    # Reading back the requeue and both allocations changes nothing.
    before = copy.deepcopy(state)
    for seq, event in [(9, requeued), (10, again), (5, first[0])]:
        evolve(state, seq, event)
    before.last_seq = 10  # only the read position moves
    assert state == before


def test_a_job_cancelled_while_it_ran_on_a_node_then_lost_is_cancelled_not_requeued_to_run_again():
    allocated = JobAllocated(job_id=3, node="n1", cpus=1, memory_mb=100, allocated_at=NOW)
    state = replay([(1, node("n1")), (2, node("n2")), (3, submitted(requeue=True)), (4, allocated),
                    (5, JobCancelRequested(job_id=3, requested_at=NOW)),
                    (6, NodeDown(node="n1", reason="gone", down_at=NOW))])
    assert [type(d).__name__ for d in run_policy(state)] == ["JobRequeued"]  # its executor never ended it
    assert [(type(d).__name__, d.job_id) for d in run_policy(state)] == [("JobCancelled", 3)]
    finished_there = replay([(1, node("n1")), (2, submitted(requeue=True)), (3, allocated),
                             (4, JobCancelRequested(job_id=3, requested_at=NOW)), (5, finished(3, "n1"))])
    assert finished_there.cancel_if_requeued == set() and finished_there.cancel_requested == {}


def test_a_job_without_requeue_lost_with_its_node_ends_node_fail():
    state = replay([(1, node("n1")), (2, submitted()), (3, NodeDown(node="n1", reason="x", down_at=NOW))])
    evolve(state, 4, JobAllocated(job_id=2, node="n1", cpus=1, memory_mb=100, allocated_at=NOW))
    (lost,) = run_policy(state)
    assert isinstance(lost, JobLost) and lost.end_after == 0 and state.pending(2) is None
