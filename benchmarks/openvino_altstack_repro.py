#!/usr/bin/env python
"""Minimal reproducer (no cspdet, no torch): two OpenVINO Cores freed in creation order leave the thread's alternate
signal stack unmapped, and the next Python-level signal handler call kills the process with SIGSEGV.

    python benchmarks/openvino_altstack_repro.py               # affected OpenVINO: "Segmentation fault", exit -11
    python benchmarks/openvino_altstack_repro.py --one-core    # the workaround (one Core for the process): survives

Each ``openvino.Core`` loads a CPU plugin whose ``SigAltStackSetup`` (intel_cpu ``sigstack_manager.cpp``) mmaps
a new alternate signal stack and installs it with ``sigaltstack(&new, &old)``; its destructor restores ``old`` only
if ``new`` is still current, and munmaps ``new`` either way. Core A, then Core B (B saves A's stack as its ``old``);
free A (A's stack is unmapped, B's stays current); free B (B restores A's unmapped stack). From then on the kernel
cannot push a signal frame for any handler installed with SA_ONSTACK -- CPython installs every Python-level handler
that way since 3.10 -- and delivers SIGSEGV (si_code SI_KERNEL) instead: here a SIGCHLD, as the exit of any child
process raises (``--child``: from a real one). Independent of the inference precision and of the CPU (no AMX).
See benchmarks/results/openvino_bf16_crash.md.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np


def alternate_signal_stack() -> str:
    """This thread's alternate signal stack and whether it lies in mapped memory (Linux)."""

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    current = StackT()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(current))
    sp = current.ss_sp or 0
    lines = Path("/proc/self/maps").read_text().splitlines()
    maps = [[int(v, 16) for v in line.split()[0].split("-")] for line in lines]
    mapped = any(lo <= sp < hi for lo, hi in maps)
    return f"sp={sp:#x} size={current.ss_size} flags={current.ss_flags} mapped={mapped}"


def tiny_model():
    """(1, 3, 32, 32) -> one 3x3 convolution: just enough for the CPU plugin to compile something."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 32, 32], ov.Type.f32, name="x")
    w = ops.constant(np.full((8, 3, 3, 3), 0.1, np.float32))
    return ov.Model([ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])], [x], "tiny")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one-core", action="store_true", help="both compilations on one Core (the workaround)")
    parser.add_argument("--child", action="store_true", help="get the SIGCHLD from a real child process")
    args = parser.parse_args()
    import openvino as ov

    print(f"python {sys.version.split()[0]}, openvino {ov.__version__}", flush=True)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # any Python-level handler: SA_ONSTACK
    print("start               ", alternate_signal_stack(), flush=True)
    model = tiny_model()
    x = np.ones((1, 3, 32, 32), np.float32)
    core_a = ov.Core()
    compiled_a = core_a.compile_model(model, "CPU")
    compiled_a(x)
    core_b = core_a if args.one_core else ov.Core()
    compiled_b = core_b.compile_model(model, "CPU")
    compiled_b(x)
    print("two compilations    ", alternate_signal_stack(), flush=True)
    del compiled_a, core_a
    gc.collect()
    print("first Core freed    ", alternate_signal_stack(), flush=True)
    del compiled_b, core_b
    gc.collect()
    print("second Core freed   ", alternate_signal_stack(), flush=True)
    if args.child:
        # what a test process met: the exit of a child raises SIGCHLD (fatal while the hole is still unmapped; if
        # something was mapped there meanwhile, the signal frame silently overwrites it instead)
        subprocess.run(["true"], check=True)
    else:
        signal.raise_signal(signal.SIGCHLD)  # the same signal, deterministically, with nothing mapped in between
    print("survived the SIGCHLD", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
