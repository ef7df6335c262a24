"""The code-execution sandbox: correct code passes, wrong code fails, and code that loops, forks,
allocates without bound or reaches for the network is stopped and counted as a failure."""

import time

from ifprune.eval.sandbox import run_python


def test_passing_and_failing_programs():
    assert run_python("def f(x):\n    return x + 1\nassert f(1) == 2\n").passed
    r = run_python("assert 1 == 2\n")
    assert r.status == "failed" and "AssertionError" in r.stderr


def test_infinite_loop_is_killed_on_time():
    t0 = time.perf_counter()
    r = run_python("while True:\n    pass\n", timeout_s=1.5)
    assert r.status == "timeout" and not r.passed
    assert time.perf_counter() - t0 < 10


def test_sleeping_child_processes_do_not_hang_the_run():
    t0 = time.perf_counter()
    r = run_python("import time\ntime.sleep(100)\n", timeout_s=1)
    assert r.status == "timeout" and time.perf_counter() - t0 < 10


def test_fork_is_disabled():
    r = run_python("import os\nwhile True:\n    os.fork()\n", timeout_s=3)
    assert not r.passed and r.status == "failed"


def test_unbounded_allocation_fails():
    r = run_python("x = []\nwhile True:\n    x.append(bytearray(50_000_000))\n", timeout_s=5, memory_mb=256)
    assert not r.passed and ("MemoryError" in r.stderr or r.status == "timeout")


def test_network_is_disabled():
    r = run_python("import socket\nsocket.create_connection(('example.com', 80), timeout=1)\n")
    assert not r.passed and "network access is disabled" in r.stderr


def test_runs_in_a_temporary_directory_that_is_removed():
    r = run_python("open('x.txt', 'w').write('hi')\nassert 'ifprune-sandbox-' in __file__\n")
    assert r.passed
