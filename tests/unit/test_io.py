import hashlib
import json
import os
import stat

import pytest

from mlkit._io import atomic_open, atomic_path, sha256_file, write_json


def test_atomic_open_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_open(target) as fh:
        fh.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half written")
        raise RuntimeError("crash")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_open_rejects_read_modes(tmp_path):
    with (
        pytest.raises(ValueError, match="for writing"),
        atomic_open(tmp_path / "x", "r"),
    ):
        pass


def test_atomic_path_binary(tmp_path):
    target = tmp_path / "blob.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"\x00\x01")
        assert not target.exists()
    assert target.read_bytes() == b"\x00\x01"


def test_write_json_and_sha256(tmp_path):
    path = write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_atomic_files_get_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "card.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
