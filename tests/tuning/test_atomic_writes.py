"""Result files are written whole or not at all (``tuning.storage.atomic_path``): a reader sees
the old file or the new one, and a failed write leaves the old one and no temporary file."""

import pytest

from tuning.storage import atomic_path, write_atomic


def test_the_file_appears_whole_when_the_block_ends(tmp_path):
    path = tmp_path / "report.md"
    write_atomic(path, "old")
    with atomic_path(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "old"  # not yet
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ablation.csv"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation.csv"]
