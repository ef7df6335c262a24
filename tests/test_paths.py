"""Atomic writes: nothing partial in place, what a killed writer left is cleaned, results readable."""

import os
import stat
import subprocess
import sys

import pytest

from ifprune.core.paths import atomic_path


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_failed_write_leaves_the_old_result_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_results_get_the_umask_permissions_not_a_temp_files(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "ckpt") as tmp:
            tmp.mkdir()
            fd = os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600)  # as a library may
            os.close(fd)
        with atomic_path(tmp_path / "plan.json") as tmp:
            tmp.write_text("{}")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(mask)
    assert mode(tmp_path / "ckpt") == 0o755
    assert mode(tmp_path / "ckpt" / "model.safetensors") == 0o644
    assert mode(tmp_path / "plan.json") == 0o644


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path, caplog):
    target = tmp_path / "export"
    # a writer killed with -9 in the middle of its write
    code = ("import os, sys; from ifprune.core.paths import atomic_path\n"
            "with atomic_path(sys.argv[1]) as t:\n    t.mkdir(); (t / 'big').write_bytes(b'x' * 1000); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
    assert len(left) == 1 and not target.exists()
    (tmp_path / ".export.unrelated").mkdir()  # not ours: never touched
    with caplog.at_level("WARNING", logger="ifprune"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
    assert not left[0].exists() and (tmp_path / ".export.unrelated").is_dir() and target.is_dir()
    assert "left by an interrupted write" in caplog.text


def test_an_atomic_write_replaces_a_link_not_its_target(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("theirs")
    link = tmp_path / "out.txt"
    link.symlink_to(target)
    with atomic_path(link) as tmp:
        tmp.write_text("ours")
    assert not link.is_symlink() and link.read_text() == "ours" and target.read_text() == "theirs"
    d = tmp_path / "dir"
    d.mkdir()
    dlink = tmp_path / "outdir"
    dlink.symlink_to(d, target_is_directory=True)
    with atomic_path(dlink) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    assert dlink.is_dir() and not dlink.is_symlink() and list(d.iterdir()) == []


def test_the_suite_does_not_use_the_users_cache():
    from pathlib import Path

    from ifprune.core.paths import cache_dir

    assert cache_dir().resolve() != (Path.home() / ".cache" / "ifprune").resolve()
    assert cache_dir().name == ".test-cache" or "IFPRUNE_TEST_CACHE" in os.environ
