"""psp.metrics: labels, scrape-time sampling, and the HTTP endpoint."""

from __future__ import annotations

import queue
import threading
import urllib.request

import pytest

from psp.metrics import Metrics, method_label
from psp.parser import parse
from tests.conftest import LOOPBACK

INVITE_180 = (
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 4 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_unknown_methods_share_one_label_value() -> None:
    assert method_label("INVITE") == "INVITE"
    assert method_label("XYZZY") == method_label("FOO") == "other"


@pytest.mark.parametrize(("data", "labels"), [
    (INVITE_180, ("INVITE", "1xx")),
    (b"BYE sip:x@y SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n", ("BYE", "none")),
    (b"SIP/2.0 486 Busy Here\r\ncseq: 1 subscribe\r\n\r\n", ("SUBSCRIBE", "4xx")),
    (b"\r\n", ("other", "none")),
])
def test_sent_messages_are_labelled_from_their_bytes(data: bytes, labels: tuple[str, str]) -> None:
    metrics = Metrics()
    metrics.count_sent("udp", data)
    metrics.count_sent("udp", data)
    method, status_class = labels
    assert sample(metrics, "psp_messages_sent_total", transport="udp", method=method, status_class=status_class) == 2


def test_received_responses_are_labelled_by_cseq_method_and_status_class() -> None:
    metrics = Metrics()
    metrics.count_received("tcp", parse(INVITE_180))
    assert sample(metrics, "psp_messages_received_total", transport="tcp", method="INVITE", status_class="1xx") == 1


def test_each_instance_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.count_sent("udp", INVITE_180)
    assert sample(two, "psp_messages_sent_total", transport="udp", method="INVITE", status_class="1xx") is None


def test_scrape_over_http_samples_fifos_and_core_stats_at_scrape_time() -> None:
    metrics = Metrics()
    fifo: queue.Queue[int] = queue.Queue()
    stats = {"transactions": {"ist": 0}, "retransmissions": 0, "timeouts": 0}
    metrics.watch_fifo("inbound", fifo.qsize)
    metrics.watch_core(lambda: stats)
    metrics.processing_child("INVITE").observe(0.002)
    port = metrics.serve(LOOPBACK, 0)
    try:
        for n in range(3):
            fifo.put(n)
        stats.update(transactions={"ist": 4, "nict": 1}, retransmissions=9)
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as reply:
            page = reply.read().decode()
    finally:
        metrics.close()
    assert 'psp_fifo_depth{fifo="inbound"} 3.0' in page
    assert 'psp_transactions_active{kind="ist"} 4.0' in page
    assert 'psp_transactions_active{kind="nict"} 1.0' in page
    assert "psp_retransmissions_total 9.0" in page
    assert 'psp_processing_seconds_count{kind="INVITE"} 1.0' in page


def test_counts_from_several_threads_all_add_up() -> None:
    metrics = Metrics()

    def send() -> None:
        for _ in range(5000):
            metrics.count_sent("udp", INVITE_180)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sample(metrics, "psp_messages_sent_total", transport="udp", method="INVITE", status_class="1xx") == 20000


def test_latency_buckets_are_cumulative_and_inclusive() -> None:
    metrics = Metrics()
    series = metrics.processing_child("BYE")
    for seconds in (0.001, 0.001, 0.003, 7.0):  # 0.001 is in le="0.001" (Prometheus buckets are <=)
        series.observe(seconds)
    assert sample(metrics, "psp_processing_seconds_bucket", kind="BYE", le="0.0005") == 0
    assert sample(metrics, "psp_processing_seconds_bucket", kind="BYE", le="0.001") == 2
    assert sample(metrics, "psp_processing_seconds_bucket", kind="BYE", le="0.005") == 3
    assert sample(metrics, "psp_processing_seconds_bucket", kind="BYE", le="5.0") == 3
    assert sample(metrics, "psp_processing_seconds_bucket", kind="BYE", le="+Inf") == 4
    assert sample(metrics, "psp_processing_seconds_count", kind="BYE") == 4
    assert sample(metrics, "psp_processing_seconds_sum", kind="BYE") == pytest.approx(7.005)
