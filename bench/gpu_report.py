"""bench/gpu.sh's one JSON document: the steps' parts merged, with a summary of the figures on top.

    python bench/gpu_report.py --parts DIR --out FILE [--mode gpu] [--command "..."]
    python bench/gpu_report.py --merge FIRST.json RERUN.json --out bench/results/gpu_<date>.json

--parts reads what the steps wrote into DIR (install.json, env.json, tests.json, warmup.json, train.json,
decode.json, tiny_corpus.json, and steps.tsv: a line per step with its name, status, exit code, seconds,
limit, and its start and end in seconds from the start of bench/gpu.sh). --merge
combines the documents of a first call and of a rerun that repeated only some steps: each section comes
from the last document whose step for it succeeded (else from the last that has it).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

# Each section of the document, and the step (bench/gpu.sh) whose part it is.
SECTIONS = {
    "install": "install",
    "env": "env",
    "cuda_tests": "tests",
    "warmup": "warmup",
    "train": "train",
    "decode": "decode",
    "tiny_corpus": "tiny_corpus",
}


def read_steps(path: Path) -> dict:
    steps = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, status, rc, seconds, limit, start, end = line.split("\t")
            steps[name] = {"status": status, "rc": rc, "wall_s": float(seconds), "limit_s": limit}
            steps[name] |= {"from_s": int(start), "to_s": int(end)}
    return steps


def read_part(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:  # a step killed while printing: keep what can be read
        return {"unreadable": f"{exc}", "text_tail": path.read_text()[-2000:]}


def value(text: str):
    """A recorded property (JUnit XML holds text) as the number or truth value it was."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


def cases_with(tests: dict, prop: str) -> dict:
    """{test: its recorded properties} of the tests that recorded `prop`."""
    return {
        name: {k: value(v) for k, v in case["properties"].items()}
        for name, case in (tests.get("cases") or {}).items()
        if prop in (case.get("properties") or {})
    }


def train_summary(train: dict) -> dict:
    out = {}
    for shape, res in (train.get("shapes") or {}).items():
        contestants = res.get("contestants") or {}
        out[shape] = {
            **{name: {k: c[k] for k in ("tokens_per_s", "mfu", "step_ms")} for name, c in contestants.items()},
            **{k: v for k, v in (res.get("ratios") or {}).items() if not k.endswith("quartiles")},
            **({"not_run": res["errors"]} if res.get("errors") else {}),
            **({"stopped": res["stopped"]} if res.get("stopped") else {}),
        }
    return out


def decode_summary(decode: dict) -> dict:
    out = {}
    for shape, res in (decode.get("shapes") or {}).items():
        for key, m in res.items():
            if key.startswith("greedy_"):
                out[f"{shape}_{key}"] = {
                    **m["tokens_per_s"],
                    "ratio_vs_gpt2_generate": m["ratio_vs_gpt2_generate"],
                    "ratio_vs_generate_same_model": m["ratio_vs_generate_same_model"],
                    "same_tokens_as_generate": m["same_tokens_as_generate"],
                }
    return out


def beside_warmup(steps: dict) -> dict:
    """Seconds each step ran while the compile warm-up ran beside it (on the other half of the cores)."""
    warm = steps.get("warmup")
    if not warm:
        return {}
    out = {}
    for name in ("tests", "tiny_corpus"):
        if name in steps and steps[name].get("call") == warm.get("call"):  # the same call, when merged
            both = min(steps[name]["to_s"], warm["to_s"]) - max(steps[name]["from_s"], warm["from_s"])
            out[name] = max(both, 0)
    return out


def compile_s(warmup: dict, train: dict) -> dict:
    """The compiled models' first steps: cold (the warm-up, an empty cache) and warm (the timed run)."""
    out = {}
    for when, part in (("cold", warmup), ("warm", train)):
        for shape, res in (part.get("shapes") or {}).items():
            for name, seconds in (res.get("first_steps_s") or {}).items():
                if name.endswith("compiled"):
                    out.setdefault(f"{shape}/{name}", {})[when] = seconds
    return out


def summary(doc: dict) -> dict:
    """The figures to read first; the sections below hold everything."""
    tests, tiny = doc.get("cuda_tests") or {}, doc.get("tiny_corpus") or {}
    failed = [name for name, c in (tests.get("cases") or {}).items() if c["outcome"] in ("failed", "error")]
    return {
        "steps": {name: s["status"] for name, s in doc.get("steps", {}).items()},
        "tests": {**(tests.get("counts") or {}), "failed_tests": failed},
        "batch_invariance": cases_with(tests, "max_abs_logit_diff"),
        "train": train_summary(doc.get("train") or {}),
        "compile_first_steps_s": compile_s(doc.get("warmup") or {}, doc.get("train") or {}),
        "beside_warmup_s": beside_warmup(doc.get("steps") or {}),
        "decode": decode_summary(doc.get("decode") or {}),
        "tiny_corpus": {k: tiny.get(k) for k in ("status", "wall_s", "startup_s", "eval_s", "headline")},
    }


def top(doc: dict) -> dict:
    env = doc.get("env") or {}
    device = (doc.get("train") or {}).get("device") or {}
    return {
        "device_name": env.get("device_name") or device.get("device_name"),
        "date": doc.get("date") or datetime.date.today().isoformat(),
        "torch": env.get("torch") or (doc.get("train") or {}).get("torch"),
        "cuda": env.get("cuda"),
    }


def from_parts(parts: Path, mode: str, command: str) -> dict:
    doc = {"date": datetime.date.today().isoformat(), "mode": mode, "command": command}
    doc["steps"] = read_steps(parts / "steps.tsv")
    for name, step in SECTIONS.items():
        part = read_part(parts / f"{step}.json")
        if part is not None:
            doc[name] = part
    return doc


def merged(docs: list[dict]) -> dict:
    out = dict(docs[-1])
    last = len(docs) - 1
    out["steps"] = {name: {**step, "call": last} for name, step in out.get("steps", {}).items()}
    for name, step in SECTIONS.items():
        having = [d for d in docs if name in d]
        good = [d for d in having if d.get("steps", {}).get(step, {}).get("status") == "ok"]
        chosen = (good or having or [None])[-1]
        if chosen is not None:
            out[name] = chosen[name]
            if step in chosen.get("steps", {}):
                out["steps"][step] = {**chosen["steps"][step], "call": docs.index(chosen)}
    out["merged_from"] = [d.get("command") for d in docs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=Path, help="the folder of the steps' parts")
    ap.add_argument("--merge", type=Path, nargs="+", help="documents to combine, oldest first")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mode", default="gpu")
    ap.add_argument("--command", default="bash bench/gpu.sh")
    args = ap.parse_args()
    if args.merge:
        doc = merged([json.loads(p.read_text()) for p in args.merge])
    else:
        doc = from_parts(args.parts, args.mode, args.command)
    body = {k: v for k, v in doc.items() if k not in ("device_name", "date", "torch", "cuda", "summary")}
    doc = {**top(doc), **body}
    doc = {**doc, "summary": summary(doc)}
    order = ["device_name", "date", "torch", "cuda", "mode", "command", "summary", "steps", *SECTIONS]
    doc = {k: doc[k] for k in [*order, *doc] if k in doc}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
