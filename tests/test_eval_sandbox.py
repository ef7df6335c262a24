"""The code-execution sandbox: correct code passes, wrong code fails, and code that loops, forks,
allocates without bound or reaches for the network is stopped and counted as a failure."""

import socket
import time

import pytest

from ifprune.eval.sandbox import namespace_prefix, run_python


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


def test_exiting_zero_before_the_asserts_is_not_a_pass():
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit(0)"):
        r = run_python(f"{exit_call}\nassert False, 'never reached'\n")
        assert r.status == "failed" and not r.passed, exit_call


def test_printing_the_token_guess_does_not_pass():
    r = run_python("import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b'0' * 32)\n    except OSError:\n"
                   "        pass\nos._exit(0)\n")
    assert not r.passed


namespaced = pytest.mark.skipif(not namespace_prefix(), reason="this machine refuses unshare (no namespaces)")


@namespaced
def test_a_setsid_grandchild_dies_with_the_program_and_the_run_is_bounded(tmp_path):
    flag = tmp_path / "late.txt"
    prog = ("import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'sleep 2; echo late > " + str(flag) + "'], {}, setsid=True)\n")
    t0 = time.perf_counter()
    r = run_python(prog, timeout_s=2)
    assert time.perf_counter() - t0 < 5, r
    time.sleep(3)
    assert not flag.exists()


@namespaced
def test_no_network_even_to_loopback_and_no_view_of_the_parent(monkeypatch):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        r = run_python(f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n", timeout_s=5)
        assert not r.passed
    finally:
        srv.close()
    monkeypatch.setenv("IFPRUNE_TEST_SECRET", "s3cret")
    r = run_python("import os\ntext = open(f'/proc/{os.getppid()}/environ').read()\nassert 's3cret' in text\n")
    assert not r.passed
    r = run_python("import os\nassert os.getpid() == 1 or os.getppid() == 0\n")  # alone in its PID namespace
    assert r.passed, r.stderr


def test_filesystem_outside_the_temporary_directory_is_read_only(tmp_path):
    from ifprune.eval.sandbox import read_only_view

    if not read_only_view():
        pytest.skip("this machine refuses mount namespaces: the sandbox cannot make a read-only view here")
    target = tmp_path / "escape.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')\n")
    assert not r.passed and "Read-only file system" in r.stderr and not target.exists()
    r = run_python("import os\nopen('here.txt', 'w').write('x')\nopen(os.environ['TMPDIR'] + '/there', 'w').write('y')\n"
                   "assert open('here.txt').read() == 'x'\n")
    assert r.passed, r.stderr  # its own directory stays writable
    target.write_text("outside is still writable for the host")  # the view did not leak to the host
