"""``charlstm info``: versions, the device, every kernel path and whether it can run here (and
why not), and each backend's verification status (from the registry, :mod:`charlstm.backends`)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Optional

import torch

from . import __version__, backends


def collect() -> dict:
    """Everything ``charlstm info`` prints, as a dict."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    info = {
        "charlstm": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "triton": triton_version,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
        "device": (torch.cuda.get_device_name(0) if cuda else
                   f"cpu ({platform.processor() or platform.machine()})"),
        "backend_override": os.environ.get(backends.ENV_VAR),
        "disabled_variants": " ".join(sorted(backends.disabled_variants())) or None,
        # read per call by the triton backend (one fixed configuration instead of autotuning)
        "triton_autotune": os.environ.get("CHARLSTM_TRITON_AUTOTUNE", "1") != "0",
        "auto_picks": backends.resolve("auto", device, torch.float32),
        # what a bare backend name runs on this device (float32), or why it cannot
        "own_choice": {},
        "backends": dict(backends.STATUS),
        # the cells each backend's kernels implement (lstm, gru, rnn_tanh, rnn_relu)
        "cells": dict(backends.CELLS_BY_BACKEND),
        "variants": {},
    }
    for name in backends.SELECTORS:
        why = backends.unavailable_reason(name, device, torch.float32)
        info["own_choice"][name] = (f"unavailable: {why}" if why else
                                    backends.resolve(name, device, torch.float32))
    for v in backends.variants(device):
        info["variants"][v.name] = {"available": v.available, "reason": v.reason}
    return info


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="charlstm info",
        description="Print versions, the device, every kernel path's availability and status.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    sections = ("own_choice", "backends", "cells", "variants")
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key not in sections:
            print(f"{key:<{width}}  {value}")
    print("a bare name runs (float32 here):")
    for name, choice in info["own_choice"].items():
        print(f"  {name:<8} -> {choice}")
    print("backends (status):")
    for name, status in info["backends"].items():
        print(f"  {name:<10} {status}; cells: {', '.join(info['cells'][name])}")
    print("kernel paths (here):")
    w = max(len(n) for n in info["variants"])
    for name, v in info["variants"].items():
        why = "available" if v["available"] else f"unavailable: {v['reason']}"
        print(f"  {name:<{w}}  {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
