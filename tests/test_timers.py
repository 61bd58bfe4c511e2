"""Timer values (RFC 3261 17 / table 4, RFC 6026) and the clock-free deadline heap."""

import pytest

from psp.timers import Timer, TimerHandle, TimerHeap, TimerSettings

S = TimerSettings()


def test_defaults_are_the_rfc_values():
    assert (S.t1, S.t2, S.t4, S.timer_c) == (0.5, 4.0, 5.0, 180.0)


@pytest.mark.parametrize("timer", [Timer.A, Timer.E, Timer.G])
def test_retransmission_timers_start_at_t1_and_never_on_reliable(timer):
    assert S.duration(timer, reliable=False) == 0.5
    assert S.duration(timer, reliable=True) is None


@pytest.mark.parametrize("timer", [Timer.B, Timer.F, Timer.H, Timer.L, Timer.M])
def test_transaction_timeouts_are_64_t1_on_any_transport(timer):
    assert S.duration(timer, reliable=False) == 32.0
    assert S.duration(timer, reliable=True) == 32.0


def test_wait_timers_on_udp_and_zero_on_reliable():
    assert S.duration(Timer.D, False) == 32.0
    assert S.duration(Timer.I, False) == S.duration(Timer.K, False) == 5.0
    assert S.duration(Timer.J, False) == 32.0
    for timer in (Timer.D, Timer.I, Timer.J, Timer.K):
        assert S.duration(timer, True) == 0.0


def test_timer_d_is_never_below_64_t1_nor_32_s():
    assert TimerSettings(t1=1.0, t2=4.0).duration(Timer.D, False) == 64.0
    assert TimerSettings(t1=0.1, t2=4.0).duration(Timer.D, False) == 32.0


def test_values_derive_from_configured_t1_t4_and_c():
    s = TimerSettings(t1=0.1, t2=0.4, t4=1.0, timer_c=200.0)
    assert s.duration(Timer.B, False) == pytest.approx(6.4)
    assert s.duration(Timer.K, False) == 1.0
    assert s.duration(Timer.C, False) == s.duration(Timer.C, True) == 200.0


def test_backoff_a_doubles_without_cap_e_and_g_cap_at_t2():
    intervals = [0.5]
    for _ in range(6):
        intervals.append(S.backoff(Timer.A, intervals[-1]))
    assert intervals == [0.5, 1, 2, 4, 8, 16, 32]
    for timer in (Timer.E, Timer.G):
        capped = [0.5]
        for _ in range(5):
            capped.append(S.backoff(timer, capped[-1]))
        assert capped == [0.5, 1, 2, 4, 4, 4]


@pytest.mark.parametrize("kwargs", [{"t1": 0}, {"t4": -1}, {"t1": 5.0, "t2": 4.0}, {"timer_c": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        TimerSettings(**kwargs)


def test_heap_pops_due_payloads_in_deadline_then_schedule_order():
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule(3.0, "c")
    heap.schedule(1.0, "a1")
    heap.schedule(1.0, "a2")
    heap.schedule(2.0, "b")
    assert heap.next_deadline() == 1.0
    assert heap.pop_due(0.5) == []
    assert heap.pop_due(2.0) == ["a1", "a2", "b"]
    assert heap.next_deadline() == 3.0
    assert len(heap) == 1


def test_cancel_is_lazy_and_harmless():
    heap: TimerHeap[str] = TimerHeap()
    first = heap.schedule(1.0, "x")
    heap.schedule(2.0, "y")
    heap.cancel(first)
    heap.cancel(first)  # twice: no effect
    heap.cancel(None)
    assert len(heap) == 1
    assert heap.next_deadline() == 2.0  # the cancelled top entry is skipped
    assert heap.pop_due(10.0) == ["y"]
    assert heap.next_deadline() is None


def test_cancelling_a_fired_handle_is_a_no_op():
    heap: TimerHeap[str] = TimerHeap()
    handle = heap.schedule(1.0, "x")
    later = heap.schedule(5.0, "z")
    assert heap.pop_due(1.0) == ["x"]
    heap.cancel(handle)
    assert len(heap) == 1
    heap.cancel(later)
    assert len(heap) == 0
    assert heap.pop_due(100.0) == []


def test_a_cancelled_entry_lets_go_of_its_payload_and_the_heap_stays_bounded():
    heap: TimerHeap[object] = TimerHeap()
    payload = object()
    handle = heap.schedule(180.0, payload)
    heap.cancel(handle)
    assert handle.payload is None  # a cancelled Timer C must not keep its call alive for minutes
    for n in range(5000):
        heap.cancel(heap.schedule(float(n), n))
    live = heap.schedule(1.0, "live")
    assert len(heap._heap) <= 2 * len(heap) + 1024 + 1
    assert heap.pop_due(10_000.0) == ["live"] and live.payload is None


def test_lanes_keep_fixed_delays_in_fifos_and_pop_in_deadline_order_with_the_heap():
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule(1.0 + 32.0, "j1", lane=32.0)
    heap.schedule(2.0 + 5.0, "k1", lane=5.0)
    heap.schedule(7.0, "tu")  # the heap: first among equal deadlines
    heap.schedule(3.0 + 32.0, "j2", lane=32.0)
    heap.schedule(3.0 + 5.0, "k2", lane=5.0)
    assert len(heap) == 5 and len(heap._heap) == 1
    assert heap.next_deadline() == 7.0
    assert heap.pop_due(8.0) == ["tu", "k1", "k2"]
    assert heap.next_deadline() == 33.0
    assert heap.pop_due(100.0) == ["j1", "j2"]
    assert heap.next_deadline() is None and len(heap) == 0


def test_an_entry_due_before_its_lanes_last_goes_to_the_heap():
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule(40.0, "late", lane=32.0)
    heap.schedule(35.0, "clock went back", lane=32.0)
    assert heap.pop_due(50.0) == ["clock went back", "late"]


def test_cancelled_lane_entries_are_skipped_and_stay_bounded():
    heap: TimerHeap[object] = TimerHeap()
    first = heap.schedule(32.0, "x", lane=32.0)
    heap.schedule(33.0, "y", lane=32.0)
    heap.cancel(first)
    assert first.payload is None and heap.next_deadline() == 33.0
    for n in range(5000):
        heap.cancel(heap.schedule(100.0 + n, n, lane=32.0))
    assert sum(len(lane) for lane in heap._lanes.values()) <= 2 * len(heap) + 1024 + 1
    assert heap.pop_due(10_000.0) == ["y"] and len(heap) == 0


def test_add_takes_a_handle_the_caller_made():
    class Tagged(TimerHandle):
        __slots__ = ("tag",)

    heap: TimerHeap[str] = TimerHeap()
    handle = Tagged(5.0, "payload")
    handle.tag = "J"
    assert heap.add(handle, lane=5.0) is handle
    assert heap.pop_due(5.0) == ["payload"] and handle.cancelled and handle.tag == "J"
