"""All-or-nothing writes: a failure leaves the previous content, a success leaves no stray files."""

import pytest

from mlx_bluey.atomic import atomic_directory, atomic_write_text


def test_directory_replaces_the_old_one_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as work:
        (work / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as work:
            (work / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "one"
    with atomic_directory(target) as work:
        (work / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_text_file(tmp_path):
    path = tmp_path / "x" / "metrics.jsonl"
    atomic_write_text(path, "a\n")
    atomic_write_text(path, "b\n")
    assert path.read_text() == "b\n" and sorted(p.name for p in path.parent.iterdir()) == ["metrics.jsonl"]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "m.json", "{}")
        with atomic_directory(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
