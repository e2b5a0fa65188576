"""What the GPU benchmarks share (bench/gpu.sh runs them): the device, a clock that waits for the device,
a time budget that ends a benchmark early with what it has measured, and the one JSON document on stdout
(everything else goes to stderr)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
H200_BF16_FLOPS = 790e12  # the H200's bf16 matrix rate as measured here (8192^3 products: 769-798 TFLOP/s)


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """The benchmark's one JSON document, on stdout, with the time it ended (bench/gpu.sh reads it)."""
    print(json.dumps({**result, "ended_unix": round(time.time(), 1)}, indent=2, default=str), flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> float:
    """perf_counter once the device has finished what it was given."""
    sync(device)
    return time.perf_counter()


class Stopped(BaseException):
    """The benchmark's time is up (its budget, or the SIGTERM of bench/gpu.sh's `timeout`). Not an Exception,
    so that no `except Exception` on the way (torch.compile has many) takes it for a failure."""


class Budget:
    """Seconds left to a benchmark. SIGTERM raises Stopped, so that `timeout` still gets the figures so far."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds
        signal.signal(signal.SIGTERM, self._on_term)

    @staticmethod
    def _on_term(signum, frame):
        raise Stopped(f"signal {signum}")

    def left(self) -> float:
        return self.end - time.perf_counter()

    def check(self, reserve: float = 0.0) -> None:
        if self.left() < reserve:
            raise Stopped(f"time budget: under {reserve:.0f} s left")


def common_args(description: str) -> argparse.ArgumentParser:
    """--device, --toy and --budget-s, which every GPU benchmark takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--toy", action="store_true", help="toy sizes, to try the benchmark on a CPU in seconds")
    ap.add_argument("--budget-s", type=float, default=600.0, help="stop early, printing what was measured")
    return ap


def device_facts(device: str) -> dict:
    """The device's name and what it offers for the figures."""
    if not device.startswith("cuda"):
        return {"device_name": "cpu", "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(device)
    return {
        "device_name": props.name,
        "multiprocessors": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }


def matmul_flops(device: str, n: int, dtype: torch.dtype = torch.bfloat16, reps: int = 10) -> float:
    """The measured rate of an n x n x n matrix product (FLOP/s): the mean of `reps` after 3 warm-ups."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    start = clock(device)
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (clock(device) - start)
