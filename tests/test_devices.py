"""The CPU allocator setting: large freed tensors are reused, not page-faulted in again."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, torch
    from neurocast.devices import keep_freed_memory, setup_torch

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    info = ctypes.CDLL("libc.so.6").mallinfo2
    info.restype = MallInfo2
    setup_torch(torch.device("cpu"))
    before = info().hblkhd
    t = torch.empty(16 * 2**20)                 # 64 MB: above glibc's largest mmap threshold
    mapped = info().hblkhd - before
    del t
    print(keep_freed_memory(), mapped // 2**20, info().fordblks // 2**20)
""")

def _probe(env_value):
    import os

    env = {**os.environ}
    env.pop("NEUROCAST_CPU_ALLOCATOR", None)
    if env_value is not None:
        env["NEUROCAST_CPU_ALLOCATOR"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator thresholds")
def test_cpu_setup_keeps_freed_memory_and_system_leaves_the_allocator_alone():
    kept = _probe(None)
    assert kept.returncode == 0, kept.stderr
    flag, mapped, free = kept.stdout.split()
    if flag != "True":
        pytest.skip("the C library here is not glibc")
    # kept: the 64 MB tensor came from the heap (no mmap) and stays there, free, for the next one
    assert int(mapped) == 0 and int(free) >= 64
    flag, mapped, free = _probe("system").stdout.split()
    # system: glibc mapped it for itself and gave it back on free
    assert flag == "False" and int(mapped) >= 64 and int(free) < 64


def test_bad_allocator_setting_is_one_line_error():
    out = _probe("jemalloc")
    assert out.returncode != 0
    assert "NEUROCAST_CPU_ALLOCATOR='jemalloc' is not one of keep, system" in out.stderr
