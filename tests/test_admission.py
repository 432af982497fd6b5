"""Admission (issue 19, points 1 and 2): an idle service always admits; capacity is what was served
per second of busy time, over a window that forgets; the upload budget; when and why it sheds.

``Admission`` is driven along a known timeline (its clock is a parameter). tests/test_shedding.py
reproduces the sequences that locked the service out, through HTTP with a real run.
"""

import math

import pytest

from shortvid.serve.admission import Admission, Capacity, Refusal


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def admission(clock, budget=1.0, max_queue=1000, window=10.0) -> Admission:
    return Admission(max_queue=max_queue, max_queue_seconds=budget, max_uploads=8, max_upload_bytes=1000,
                     window=window, clock=clock)


def serve_one(gate: Admission, clock: Clock, seconds: float) -> None:
    assert gate.admit() is None
    clock.tick(seconds)
    gate.done()


# --- the estimate ---------------------------------------------------------------------------------

def test_an_idle_service_admits_whatever_it_measured():
    clock = Clock()
    gate = admission(clock, budget=0.05)
    serve_one(gate, clock, 30.0)  # one request that took 30 s (a stall, a huge upload): far over the budget
    assert gate.throughput() < 0.2  # one answer in 30 busy seconds (which count for at most the window)
    for _ in range(5):
        clock.tick(1.0)
        assert gate.check() is None and gate.admit() is None  # nothing ahead: nothing to wait for
        assert gate.admit().kind == "Overloaded"  # but one ahead would take seconds
        gate.done()
    assert gate.expected_wait() == 0.0


def test_capacity_is_served_per_busy_second_not_the_gaps_between_answers():
    """Batches answer in bursts: 8 answers at the same instant every 0.1 s of work, and the queue
    empties after each. What was served is 80/s; the gaps between answers said far more."""
    clock = Clock()
    gate = admission(clock)
    for _ in range(50):
        for _ in range(8):
            assert gate.admit() is None
        clock.tick(0.1)
        for _ in range(8):
            gate.done()
        clock.tick(0.05)  # idle between bursts: not busy time
    assert gate.throughput() == pytest.approx(80, rel=0.05)
    while gate.admit() is None:
        pass
    assert gate.in_flight == pytest.approx(80, abs=4)  # 80 ahead take 1 s: the budget
    assert gate.expected_wait() == pytest.approx(1.0, rel=0.05)
    refusal = gate.admit()
    assert refusal.kind == "Overloaded" and "requests/s" in refusal.message and refusal.retry_after >= 1


def test_a_stall_fades_and_capacity_recovers():
    clock = Clock()
    gate = admission(clock, budget=0.2, window=10.0)
    for _ in range(200):  # 20 ms a request, one at a time: 50/s
        serve_one(gate, clock, 0.02)
    assert gate.throughput() == pytest.approx(50, rel=0.05)
    for _ in range(8):  # eight in flight when the process is frozen for 30 s
        gate.admit()
    clock.tick(30.0)
    assert gate.throughput() < 2  # measured live: 30 busy seconds, no answer
    for _ in range(8):
        gate.done()
    stalled = gate.throughput()
    assert stalled < 5
    assert gate.admit() is None and gate.admit().kind == "Overloaded"  # idle admits; a second must wait
    gate.done()
    for _ in range(400):  # light traffic again, 20 ms each, 10 a second
        serve_one(gate, clock, 0.02)
        clock.tick(0.08)
    assert gate.throughput() == pytest.approx(50, rel=0.1)  # the stall is forgotten
    for _ in range(10):
        assert gate.admit() is None  # 9 ahead take 0.18 s: within 0.2 s


def test_without_recent_evidence_the_estimate_is_dropped():
    clock = Clock()
    gate = admission(clock, budget=0.1, window=10.0)
    serve_one(gate, clock, 5.0)
    assert gate.throughput() is not None
    clock.tick(10.0 * math.log(2 / 0.5) + 0.1)  # the one answer's weight is now under min_answers
    assert gate.throughput() is None
    assert all(gate.admit() is None for _ in range(20))  # the count bound alone, until measured again


def test_busy_time_of_one_interval_counts_for_at_most_the_window():
    capacity = Capacity(window=10.0)
    capacity.advance(0.0, busy=False)
    capacity.advance(1e6, busy=True)
    assert capacity.busy == pytest.approx(10.0)
    with pytest.raises(ValueError):
        Capacity(window=0)


def test_the_count_bound_and_no_time_budget():
    clock = Clock()
    gate = Admission(max_queue=3, max_queue_seconds=None, max_uploads=1, clock=clock)
    serve_one(gate, clock, 100.0)
    assert [gate.admit() is None for _ in range(4)] == [True, True, True, False]
    assert gate.refused["QueueFull"] == 1 and gate.refused["Overloaded"] == 0


def test_shedding_is_reported_while_recent():
    clock = Clock()
    gate = Admission(max_queue=1, max_queue_seconds=1.0, max_uploads=8, shedding_window=10.0, clock=clock)
    assert gate.shedding() is None and gate.snapshot()["shedding"] is None
    gate.admit()
    assert gate.admit().kind == "QueueFull"
    clock.tick(2.0)
    shedding = gate.shedding()
    assert shedding["reason"] == "QueueFull" and shedding["seconds_ago"] == 2.0 and shedding["in_flight"] == 1
    assert "queue is full" in shedding["message"] and gate.snapshot()["shedding"] == "QueueFull"
    clock.tick(8.5)
    assert gate.shedding() is None and gate.snapshot()["shedding"] is None


def test_upload_slots_and_bytes():
    clock = Clock()
    gate = Admission(max_queue=10, max_queue_seconds=1.0, max_uploads=3, max_upload_bytes=1000, clock=clock)
    assert gate.start_upload(600) is None and gate.held_bytes == 600
    refusal = gate.start_upload(500)
    assert refusal.kind == "UploadsFull" and "budget" in refusal.message and gate.uploads == 1
    assert gate.start_upload(400) is None and gate.held_bytes == 1000  # exactly the budget
    assert gate.reserve(1).kind == "UploadsFull" and gate.held_bytes == 1000
    assert gate.start_upload(0) is None  # a body of unknown length starts with nothing reserved
    assert gate.start_upload(0).kind == "UploadsFull" and "uploads are already" in gate.start_upload(0).message
    gate.end_upload()
    gate.release(600)
    assert gate.uploads == 2 and gate.held_bytes == 400 and gate.reserve(600) is None
    assert Admission(max_queue=1, max_queue_seconds=None, max_uploads=1).start_upload(10**12) is None  # no budget


# --- exact values: what the service shows and answers ---------------------------------------------

def test_defaults():
    gate = Admission(max_queue=5, max_queue_seconds=1.0, max_uploads=2)
    assert (gate.retry_after, gate.capacity.window, gate.shedding_window) == (1, 10.0, 10.0)
    assert gate.max_upload_bytes is None
    assert (Capacity().window, Capacity().min_answers) == (10.0, 0.5)
    assert gate.start_upload() is None and gate.held_bytes == 0  # no declared length: nothing reserved yet


def test_capacity_edges():
    assert Capacity(window=0.5).window == 0.5
    with pytest.raises(ValueError, match=r"^the capacity window must be positive, not -1$"):
        Capacity(window=-1)
    fresh = Capacity(window=10.0)
    fresh.advance(0.0, busy=False)
    fresh.advance(2.0, busy=True)
    assert fresh.per_second() is None  # busy, but nothing answered yet
    fresh.answer()
    assert fresh.per_second() == pytest.approx(1 / (10 * (1 - math.exp(-0.2))))  # under a second of busy time
    no_busy = Capacity(min_answers=1.0)
    no_busy.advance(0.0, busy=False)
    no_busy.answer()
    assert no_busy.answered == 1.0 and no_busy.per_second() is None  # answered, but no busy time to divide by
    exact = Capacity(window=10.0, min_answers=1.0)
    exact.advance(0.0, busy=False)
    exact.advance(0.5, busy=True)
    exact.answer()
    assert exact.answered == 1.0 and exact.per_second() > 0  # exactly the evidence asked for is enough


def test_a_clock_read_late_does_not_count_time_twice():
    capacity = Capacity(window=10.0)
    capacity.advance(10.0, busy=False)
    capacity.advance(5.0, busy=True)  # an older reading arriving late changes nothing
    assert capacity.busy == 0.0
    capacity.advance(11.0, busy=True)  # one second since 10.0, not six since 5.0
    assert capacity.busy == pytest.approx(10 * (1 - math.exp(-0.1)))


def test_the_budget_is_inclusive_and_retry_after_says_how_far_over():
    clock = Clock()
    gate = admission(clock, budget=1.0)
    gate.capacity.answered, gate.capacity.busy = 10.0, 1.0  # 10 requests/s
    gate.in_flight = 10  # exactly one second ahead: within the budget
    assert gate.admit() is None
    gate.in_flight = 35  # 3.5 s ahead: 2.5 s over
    refusal = gate.admit()
    assert refusal == Refusal("Overloaded", "the service is at capacity (10.0 requests/s): 35 requests ahead would "
                                            "take 3.50 s, over the 1 s budget; retry later", 3)
    assert Admission(max_queue=0, max_queue_seconds=1.0, max_uploads=1, retry_after=4).admit() == Refusal(
        "QueueFull", "the queue is full (0 requests); retry later", 4)


def test_refusals_are_counted_and_named_exactly():
    clock = Clock()
    gate = Admission(max_queue=1, max_queue_seconds=None, max_uploads=1, max_upload_bytes=3 * 2**20, retry_after=2,
                     clock=clock)
    assert gate.start_upload(2**20) is None
    assert gate.start_upload(2**20) == Refusal("UploadsFull", "1 uploads are already being received; retry later", 2)
    gate.end_upload()
    assert gate.start_upload(int(2.5 * 2**20)) == Refusal(
        "UploadsFull", "the bodies held now (1.0 MiB) and this one (2.5 MiB) would pass the upload budget of 3.0 MiB; "
                       "retry later", 2)
    assert gate.reserve(3 * 2**20) == Refusal(
        "UploadsFull", "the bodies held now (1.0 MiB) and this one (3.0 MiB) would pass the upload budget of 3.0 MiB; "
                       "retry later", 2)
    gate.admit()
    gate.admit()
    gate.admit()
    assert gate.refused == {"UploadsFull": 3, "QueueFull": 2, "Overloaded": 0}


def test_what_the_service_shows_while_shedding():
    clock = Clock()
    gate = Admission(max_queue=100, max_queue_seconds=0.5, max_uploads=8, max_upload_bytes=10**6, clock=clock)
    gate.capacity.answered, gate.capacity.busy = 4.0, 1.0  # 4 requests/s, measured just now
    gate.capacity.advance(clock(), busy=False)
    assert gate.start_upload(1000) is None
    gate.in_flight = 3
    refusal = gate.admit()
    clock.tick(2.5004)
    kept = math.exp(-0.25004)  # 2.5004 s of a 10 s window, busy all along with 3 in flight
    rate = 4 * kept / (1 * kept + 10 * (1 - kept))
    assert round(rate, 3) != round(rate, 4) and round(3 / rate, 4) != round(3 / rate, 5)
    assert gate.shedding() == {"reason": "Overloaded", "message": refusal.message, "seconds_ago": 2.5,
                               "refused": {"UploadsFull": 0, "QueueFull": 0, "Overloaded": 1}, "in_flight": 3,
                               "uploads": 1, "held_bytes": 1000, "capacity_per_second": round(rate, 3),
                               "expected_wait_seconds": round(3 / rate, 4)}
    assert gate.snapshot() == {"in_flight": 3, "uploads": 1, "held_bytes": 1000, "max_upload_bytes": 10**6,
                               "refused": {"UploadsFull": 0, "QueueFull": 0, "Overloaded": 1},
                               "throughput": pytest.approx(rate), "expected_wait": pytest.approx(3 / rate),
                               "shedding": "Overloaded"}
    clock.tick(7.4996)  # exactly the shedding window after the refusal: still shedding
    assert gate.shedding()["seconds_ago"] == 10.0 and gate.snapshot()["shedding"] == "Overloaded"
    clock.tick(0.001)
    assert gate.shedding() is None and gate.snapshot()["shedding"] is None
    idle = Admission(max_queue=1, max_queue_seconds=None, max_uploads=1, clock=clock)
    assert idle.snapshot()["throughput"] == 0.0 and idle.expected_wait() == 0.0
    idle.admit()
    assert idle.admit().kind == "QueueFull" and idle.shedding()["capacity_per_second"] is None
