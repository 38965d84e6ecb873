"""``charlstm info``: versions, the device, and whether each backend can run here (and why not)."""
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
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "backend_override": os.environ.get(backends.ENV_VAR),
        # the kernel backends' own knobs (read per call by the backends)
        "triton_schedule": os.environ.get("CHARLSTM_TRITON_SCHEDULE") or "default",
        "triton_autotune": os.environ.get("CHARLSTM_TRITON_AUTOTUNE", "1") != "0",
        "cuda_path": os.environ.get("CHARLSTM_CUDA_PATH") or "auto",
        "auto_picks": backends.resolve("auto", device, torch.float32),
        "backends": {},
    }
    for name in backends.BACKENDS:
        why = backends.unavailable_reason(name, device, None)
        info["backends"][name] = {"available": why is None, "status": backends.status(name)}
    return info


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="charlstm info",
                                     description="Print versions, the device and backend availability.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key != "backends":
            print(f"{key:<{width}}  {value}")
    print("backends:")
    for name, b in info["backends"].items():
        print(f"  {name:<10} {b['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
