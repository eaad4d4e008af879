"""hpdm.host_memory: freed blocks stay in the heap for reuse (glibc), and the user's settings win."""

import os
import subprocess
import sys
import textwrap

import pytest

from hpdm import host_memory

GLIBC = host_memory._glibc() is not None

# Counts the bytes glibc holds in mmap'd blocks (mallinfo2().hblkhd) while an 8 MiB block is live:
# served from the heap, the block adds nothing there; served by mmap, it adds its 8 MiB.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from hpdm import host_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "tune":
        print(host_memory.keep_freed_memory())
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(8 << 20)
    print(libc.mallinfo2().hblkhd - before)
    libc.free(block)
    """
)


def probe(mode: str, **env) -> list:
    environ = {k: v for k, v in os.environ.items() if k not in host_memory.USER_SETTINGS and k != host_memory.OPT_OUT}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=environ, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
def test_tuned_process_serves_mib_blocks_from_the_heap():
    (mapped,) = probe("plain")
    assert int(mapped) >= 8 << 20, "without tuning, glibc maps an 8 MiB block"
    status, mapped = probe("tune")
    assert status.startswith("glibc: mmap threshold 32 MiB") and mapped == "0"


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
def test_opt_out_and_the_users_own_settings_are_left_alone():
    status, mapped = probe("tune", HPDM_MALLOC_TUNING="0")
    assert status == "off (HPDM_MALLOC_TUNING=0)" and int(mapped) >= 8 << 20
    status, mapped = probe("tune", MALLOC_MMAP_THRESHOLD_="1048576")
    assert status == "left to the environment's malloc settings" and int(mapped) >= 8 << 20


def test_status_reports_the_outcome_and_the_binaries_request_it():
    env = {k: v for k, v in os.environ.items() if k not in host_memory.USER_SETTINGS and k != host_memory.OPT_OUT}
    code = ("from hpdm import host_memory; print(host_memory.status()); "
            "print(host_memory.keep_freed_memory() == host_memory.status())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["not requested", "True"]
    code = ("import sys; from hpdm.cli import common; from hpdm import host_memory; "
            "sys.argv = ['x']; common.run_binary(lambda argv: print(host_memory.status()), 'hpdm.cli.common')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("glibc: mmap threshold 32 MiB, no trimming" if GLIBC else "not glibc: unchanged")
