"""The device-parametrized tests (tests/test_devices.py) on this machine, as one JSON document.

Runs pytest in a subprocess (with `-m cuda`: the CUDA cases alone) and reads its JUnit XML: counts, and per
test its outcome, time, the first lines of a failure and what it recorded (record_property: e.g. how far
a row's logits move beside other rows). pytest's own output goes to stderr.

    python bench/gpu_tests.py [--cuda-only] [--budget-s 90] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from gpu_common import ROOT, emit, log

TESTS = "tests/test_devices.py"


def case_of(element: ET.Element) -> tuple[str, dict]:
    """(test id, {outcome, time_s, message?, properties?}) of one <testcase>."""
    module = element.get("classname", "").rsplit(".", 1)[-1]
    name = f"{module}::{element.get('name')}"
    case: dict = {"outcome": "passed", "time_s": round(float(element.get("time", 0)), 3)}
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        found = element.find(tag)
        if found is not None:
            case["outcome"] = outcome
            text = (found.get("message") or found.text or "").strip()
            case["message"] = "\n".join(text.splitlines()[:6])[:1200]
            break
    props = {p.get("name"): p.get("value") for p in element.iter("property")}
    if props:
        case["properties"] = props
    return name, case


def read_junit(path: Path) -> dict:
    cases = dict(case_of(element) for element in ET.parse(path).getroot().iter("testcase"))
    counts = {outcome: 0 for outcome in ("passed", "failed", "error", "skipped")}
    for case in cases.values():
        counts[case["outcome"]] += 1
    return {"counts": counts, "cases": cases}


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuda-only", action="store_true", help="only the CUDA cases (pytest -m cuda)")
    ap.add_argument("--budget-s", type=float, default=600.0)
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    pytest = ["-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1"]
    pytest += ["-W", "ignore::pytest.PytestUnknownMarkWarning", *(["-m", "cuda"] if args.cuda_only else [])]
    pytest += args.pytest_args
    log("tests: python", " ".join(pytest))
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, *pytest, f"--junitxml={xml}"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=args.budget_s,
            )
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, output = "timeout", _text(exc.stdout) + _text(exc.stderr)
        log(output)
        result = {"command": "python " + " ".join(pytest), "returncode": rc}
        result["wall_s"] = round(time.perf_counter() - started, 2)
        result |= read_junit(xml) if xml.exists() else {"output_tail": output[-3000:]}
    emit(result)


if __name__ == "__main__":
    main()
