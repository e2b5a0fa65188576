"""What this machine offers gptfit, as one JSON document: Python, torch and the device, the version and
place of every package gptfit needs (those carried as wheels land in /tmp/site), which are missing, and
whether gptfit's modules import.

    python bench/gpu_env.py
"""

from __future__ import annotations

import importlib
import sys
import time
from importlib import metadata
from pathlib import Path

from gpu_common import ROOT, device_facts, emit, log

# Distribution name: the module it is imported as.
PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "huggingface-hub": "huggingface_hub",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "accelerate": "accelerate",
    "peft": "peft",
    "regex": "regex",
    "numpy": "numpy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "scikit-learn": "sklearn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "pyyaml": "yaml",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "hydra-core": "hydra",
    "omegaconf": "omegaconf",
    "antlr4-python3-runtime": "antlr4",
    "datasets": "datasets",
    "dill": "dill",
    "multiprocess": "multiprocess",
    "pydivsufsort": "pydivsufsort",
    "opacus": "opacus",
    "wandb": "wandb",
}
GPTFIT_MODULES = ("gptfit.model", "gptfit.core.sampling", "gptfit.run.training", "gptfit.train")


def package(dist: str, module: str) -> dict:
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = None
    spec = importlib.util.find_spec(module)
    where = str(Path(spec.origin).parent.parent) if spec and spec.origin else None
    return {"version": version, "at": where}


def imports(name: str) -> str:
    started = time.perf_counter()
    try:
        importlib.import_module(name)
    except Exception as exc:  # report, so that the steps after know why they will fail
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return f"ok ({time.perf_counter() - started:.1f} s)"


def main() -> None:
    import torch

    packages = {dist: package(dist, module) for dist, module in PACKAGES.items()}
    missing = [dist for dist, p in packages.items() if p["version"] is None and p["at"] is None]
    cuda = torch.cuda.is_available()
    result = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        **device_facts("cuda" if cuda else "cpu"),
        "wheels_carried": sorted(p.name for p in (ROOT / ".whl").glob("*.whl")),
        "packages": packages,
        "missing": missing,
        "gptfit_imports": {name: imports(name) for name in GPTFIT_MODULES},
    }
    log(f"env: python {result['python']}, torch {result['torch']} (CUDA {result['cuda']}), {result['device_name']}")
    for dist, p in packages.items():
        log(f"  {dist:24} {p['version'] or '-':14} {p['at'] or 'MISSING'}")
    for name, outcome in result["gptfit_imports"].items():
        log(f"  import {name}: {outcome}")
    emit(result)


if __name__ == "__main__":
    main()
