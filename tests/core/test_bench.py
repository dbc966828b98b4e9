"""The benchmark's timer waits for the GPU; `--stats` times the streaming statistics path."""

import time

import pytest
import torch

from vit_core import bench
from vit_core.bench import benchmark, timed
from vit_core.zoo import load_model


def test_on_the_cpu_the_timer_is_a_host_clock_and_never_touches_cuda(monkeypatch):
    def no_cuda(*_args, **_kwargs):
        raise AssertionError("a CPU timing must not call CUDA")

    monkeypatch.setattr(torch.cuda, "synchronize", no_cuda)
    monkeypatch.setattr(torch.cuda, "Event", no_cuda)
    elapsed = timed(lambda: time.sleep(0.03), torch.device("cpu"))
    assert 30 <= elapsed < 1000


def test_on_cuda_the_timer_synchronises_and_reads_events(monkeypatch):
    # No GPU here: fake the CUDA calls and check that the timing waits for the device, in order.
    log = []

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.name = "start" if not any(e.startswith("event") for e in log) else "end"
            log.append(f"event {self.name}")

        def record(self) -> None:
            log.append(f"record {self.name}")

        def synchronize(self) -> None:
            log.append(f"wait {self.name}")

        def elapsed_time(self, end) -> float:
            assert end.name == "end"
            return 12.5

    class Device:
        def __init__(self, device) -> None:
            assert device.type == "cuda"

        def __enter__(self) -> None:
            pass

        def __exit__(self, *_exc) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "device", Device)
    assert timed(lambda: log.append("work"), torch.device("cuda")) == 12.5
    assert log == ["synchronize", "event start", "event end", "record start", "work", "record end", "wait end"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_timer_counts_the_queued_work():
    device = torch.device("cuda")
    a = torch.randn(4096, 4096, device=device)

    def work() -> None:
        for _ in range(20):
            a @ a

    work()
    torch.cuda.synchronize()
    begin = time.perf_counter()
    work()
    torch.cuda.synchronize()
    synced = (time.perf_counter() - begin) * 1000
    assert timed(work, device) > 0.5 * synced


def test_bench_with_stats_times_the_statistics_path(monkeypatch):
    loaded = load_model("timm:vit_tiny_patch16_224", random_weights=True)
    devices = []
    real = bench.timed
    monkeypatch.setattr(bench, "timed", lambda fn, device: devices.append(device) or real(fn, device))
    report = benchmark(loaded, repeats=1, warmup=0, stats=True)
    assert set(report["median_ms"]) == {"reference", "fast", "capture", "explain_all", "analyses", "stats"}
    assert report["ratio"]["stats/reference"] > 0 and "peak_mib" not in report
    assert devices and all(device == loaded.device for device in devices)
