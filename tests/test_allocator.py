"""implicit_rec.allocator: glibc keeps a freed large block for reuse instead of mapping it afresh."""

import json
import platform
import subprocess
import sys

import pytest

from implicit_rec import allocator, cli

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

# In a fresh process: tune (or not), then malloc + touch + free a 64 MiB block 6 times, as XLA does
# with a program's temporary buffer; print whether glibc took the settings and the minor page faults
# of the last 5 rounds.
_ROUNDS = """
import ctypes, json, resource, sys
from implicit_rec import allocator
tuned = allocator.tune({allocator.ENV: sys.argv[1]})
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 64 * 2**20
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(n)
    ctypes.memset(block, 1, n)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": sum(faults[1:])}))
"""


def _rounds(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@glibc
def test_tuned_malloc_reuses_a_freed_large_block_without_page_faults():
    system, tuned = _rounds("system"), _rounds("tuned")
    assert system["tuned"] is False and tuned["tuned"] is True
    pages = 5 * 64 * 2**20 // 4096
    assert system["faults"] > pages // 4  # glibc's default: every round maps and faults the block afresh
    assert tuned["faults"] < system["faults"] // 20  # tuned: the block is reused, already resident


@pytest.mark.parametrize("value", ["", "off", "Tuned"])
def test_an_unknown_setting_is_an_error_naming_the_variable(value):
    with pytest.raises(ValueError, match=rf"IMPLICIT_REC_MALLOC={value!r}: expected 'tuned'"):
        allocator.tune({allocator.ENV: value})


def test_the_command_reports_a_bad_setting_as_one_line(monkeypatch, capsys):
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("implicit-rec: error: IMPLICIT_REC_MALLOC='jemalloc'") and err.count("\n") == 1
