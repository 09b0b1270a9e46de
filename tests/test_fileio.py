import json
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.fileio import (
    atomic_directory,
    atomic_path,
    remove_temporaries,
    remove_tree,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_path_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "sub" / "a.txt"  # the parent is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".a.txt.") and not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["a.txt"]


def test_atomic_path_keeps_the_old_file_when_the_body_raises(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary left behind


def test_atomic_path_uses_default_permissions(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_atomic_directory_appears_complete_on_success(tmp_path):
    target = tmp_path / "shard"
    with atomic_directory(target) as tmp:
        assert tmp.is_dir() and not list(tmp.iterdir()) and not target.exists()
        (tmp / "x.npy").write_bytes(b"1")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "y").write_bytes(b"2")
    assert (target / "x.npy").read_bytes() == b"1" and (target / "nested" / "y").read_bytes() == b"2"
    assert os.listdir(tmp_path) == ["shard"]


def test_atomic_directory_leaves_nothing_when_the_body_raises(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep").write_text("kept")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(tmp_path / "new") as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["old"]
    assert (old / "keep").read_text() == "kept"


def test_atomic_directory_refuses_to_replace_a_non_empty_directory(tmp_path):
    target = tmp_path / "shard"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["shard"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(obj=_json)
def test_write_json_atomic_round_trips(tmp_path_factory, obj):
    path = tmp_path_factory.mktemp("json") / "obj.json"
    write_json_atomic(path, obj)
    assert json.loads(path.read_text()) == obj


def test_write_json_atomic_format(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{}")
    write_json_atomic(path, {"b": [1, 2], "a": {"y": 1, "x": 2}})
    assert path.read_text() == '{\n  "a": {\n    "x": 2,\n    "y": 1\n  },\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert os.listdir(tmp_path) == ["m.json"]


def test_remove_tree_renames_before_deleting(tmp_path, monkeypatch):
    import shutil

    tree = tmp_path / "step_1"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    seen = []
    monkeypatch.setattr(shutil, "rmtree", lambda path, **kw: seen.append(path))  # observe, do not delete
    remove_tree(tree)
    assert not tree.exists() and len(seen) == 1
    assert seen[0].name.startswith(".step_1.") and seen[0].name.endswith(".tmp")
    monkeypatch.undo()
    assert remove_temporaries(tmp_path) == [seen[0]] and list(tmp_path.iterdir()) == []


def test_remove_temporaries_keeps_everything_else(tmp_path):
    (tmp_path / ".a.123.tmp").mkdir()
    (tmp_path / ".b.456.tmp").write_text("half")
    (tmp_path / "keep").mkdir()
    (tmp_path / ".hidden").write_text("not a temporary")
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".a.123.tmp", ".b.456.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "keep"]
