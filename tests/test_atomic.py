"""implicit_rec.atomic: round trips, nothing half-written on failure, the modes of a plain write."""

import json
import os
import stat

import numpy as np
import pytest

from implicit_rec.atomic import atomic_directory, atomic_path, write_json_atomic, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_mode_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(write_text_atomic(tmp_path / "a.txt", "x")) == _mode(plain)
    with atomic_path(tmp_path / "b.npz", suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(3))
    assert _mode(tmp_path / "b.npz") == _mode(plain)
    (tmp_path / "plain_dir").mkdir()
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert _mode(tmp_path / "d") == _mode(tmp_path / "plain_dir")


def test_json_round_trip_with_numpy_values(tmp_path):
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(7), "d": np.bool_(True)}
    path = write_json_atomic(tmp_path / "m.json", obj)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": 7, "d": True}
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "t.npz"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "d") as tmp:
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]
