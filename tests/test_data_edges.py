"""Faults in data on disk: caption paths outside the root, unreadable folders, symlink loops, a
damaged index cache, malformed captions files. Each is injected and must end as a counted, logged
skip (training goes on with the rest) or as an error naming the file and line."""

from __future__ import annotations

import json
import os
import re

import pytest

import hpdm.data as data
from hpdm.data.base import ClipSpec
from hpdm.data.captions import read_captions
from hpdm.data.index import INDEX_NAME, list_files
from hpdm.video.files import VIDEO_EXTENSIONS
from hpdm.video.skips import SkipReport
from data_fixtures import write_video

SPEC = ClipSpec((8, 32, 32))




def _prepared_paths(source) -> list[str]:
    source.prepare(SPEC)
    return sorted(item.path for item in source.items)


# --------------------------------------------------------------------------- caption paths


def test_caption_paths_outside_the_root_are_counted_skips(tree, tmp_path, warnings):
    root, info = tree
    outside = str(tmp_path / "outside.avi")
    write_video(outside, frames=12)  # readable: only the path may keep it out of training
    rows = [
        {"path": info["good"][0], "caption": "inside"},
        {"path": os.path.join(os.path.abspath(root), info["good"][1]), "caption": "inside, absolute"},
        {"path": "../outside.avi", "caption": "escapes"},
        {"path": f"{info['good'][2].split('/')[0]}/../../outside.avi", "caption": "escapes through a folder"},
        {"path": outside, "caption": "absolute, elsewhere"},
    ]
    captions = tmp_path / "pairs.jsonl"
    captions.write_text("".join(json.dumps(row) + "\n" for row in rows))

    pairs = data.TextVideoPairs(root, str(captions))
    assert _prepared_paths(pairs) == sorted(info["good"][:2])
    assert pairs.skips.by_reason["outside data root"] == 3
    assert any("3 outside data root" in w and f"{captions}:3" in w for w in warnings), warnings

    folder = data.VideoFolder(root, captions=str(captions))
    assert _prepared_paths(folder) == sorted(info["good"][:2])
    assert folder.skips.by_reason["outside data root"] == 3


def test_only_outside_paths_is_an_error_that_says_so(tree, tmp_path):
    root, _ = tree
    captions = tmp_path / "escape.csv"
    captions.write_text("path,caption\n../x.avi,a\n/elsewhere/y.avi,b\n")
    with pytest.raises(ValueError, match=r"has no entries \(2 rows name paths outside"):
        read_captions(str(captions), root)


# --------------------------------------------------------------------------- captions errors

BAD_CAPTIONS = [
    ("a.jsonl", b'{"path": "a.avi", "caption": "x"}\n\n[1, 2]\n', r"a.jsonl:3: expected a JSON object .*got a list"),
    ("b.jsonl", b'"only a string"\n', r"b.jsonl:1: expected a JSON object .*got a str"),
    ("c.jsonl", b'{"path": "a.avi", "caption": "x"}\n{"path": "b.avi", "caption": \n', r"c.jsonl:2: not valid JSON"),
    ("d.jsonl", b'{"path": 3, "caption": "x"}\n', r"d.jsonl:1: the path \('path'\) must be a string, got int"),
    ("e.jsonl", b'{"path": "", "caption": "x"}\n', r"e.jsonl:1: the path \('path'\) is empty"),
    ("f.jsonl", b'{"video": "a.avi"}\n', r"f.jsonl:1: no caption column"),
    ("g.jsonl", b'{"path": "a.avi", "caption": "x"}\n{"path": "b.avi", "caption": "\xff"}\n', r"g.jsonl:2: not UTF-8"),
    ("h.csv", b"path,caption\na.avi,ok\nb.avi\n", r"h.csv:3: no caption in this row"),
    ("i.csv", b"path,caption\na.avi,ok\nb.avi," + b"x" * 200_000 + b"\n", r"i.csv:3: not valid CSV"),
    ("j.csv", b"name,caption\na.avi,ok\n", r"j.csv:2: no path column"),
]


@pytest.mark.parametrize("name,content,message", BAD_CAPTIONS, ids=[c[0] for c in BAD_CAPTIONS])
def test_captions_errors_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + "/" + message):
        read_captions(str(path), str(tmp_path))


def test_spreadsheet_bom_and_dotted_paths_are_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffpath,caption\n./a/./b.avi,one\na/x/../b.avi,two\n".encode("utf-8"))
    assert read_captions(str(path), str(tmp_path)) == {"a/b.avi": ["one", "two"]}


# --------------------------------------------------------------------------- unreadable folders


def test_unreadable_class_folder_is_a_counted_skip(tree, monkeypatch, warnings):
    """Simulated (os.scandir raising), so that it also holds when tests run as root."""
    root, info = tree
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "Biking":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    source = data.VideoFolder(root)
    assert _prepared_paths(source) == sorted(p for p in info["good"] if not p.startswith("Biking/"))
    assert source.class_names == ("Archery", "Biking", "Diving")  # labels of the others do not shift
    assert source.skips.by_reason["unreadable directory"] == 1
    assert any("Biking (unreadable directory: Permission denied)" in w for w in warnings), warnings


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads chmod 000 folders anyway")
def test_chmod_000_class_folder_is_a_counted_skip(tree, warnings):
    root, info = tree
    folder = os.path.join(root, "Diving")
    os.chmod(folder, 0)
    try:
        source = data.VideoFolder(root)
        assert _prepared_paths(source) == sorted(p for p in info["good"] if not p.startswith("Diving/"))
        assert source.skips.by_reason["unreadable directory"] == 1
    finally:
        os.chmod(folder, 0o755)


def test_unreadable_data_root_is_a_clear_error(tree, monkeypatch):
    root, _ = tree

    def scandir(path="."):
        raise PermissionError(13, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(OSError, match="cannot list the data root .*Permission denied.*check its permissions"):
        list_files(root, VIDEO_EXTENSIONS)


# --------------------------------------------------------------------------- symlink loops


def test_symlink_loops_list_each_file_once(tree, tmp_path, warnings):
    root, info = tree
    expected = list_files(root, VIDEO_EXTENSIONS)
    os.symlink(os.path.join(root, "Archery"), os.path.join(root, "Archery", "again"))  # to itself
    os.symlink(root, os.path.join(root, "Diving", "up"))  # to an ancestor
    write_video(str(tmp_path / "more" / "v_Biking_linked.avi"), frames=12)
    os.symlink(str(tmp_path / "more"), os.path.join(root, "Biking", "more"))  # not a loop: followed

    report = SkipReport("videos", root)
    assert list_files(root, VIDEO_EXTENSIONS, report) == sorted([*expected, "Biking/more/v_Biking_linked.avi"])
    assert dict(report.by_reason) == {"symlink loop": 2}

    source = data.VideoFolder(root)
    assert _prepared_paths(source) == sorted([*info["good"], "Biking/more/v_Biking_linked.avi"])
    assert source.skips.by_reason["symlink loop"] == 2
    assert any("Archery/again (symlink loop: leads back to 'Archery'" in w for w in warnings), warnings


# --------------------------------------------------------------------------- index cache


def _damage_whole(text: str) -> str:
    return text[: len(text) // 2]


def _damage_shape(text: str) -> str:
    return json.dumps([1, 2, 3])


def _damage_entries(text: str) -> str:
    return json.dumps({"version": json.loads(text)["version"], "entries": ["not", "a", "dict"]})


def _damage_one_entry(text: str) -> str:
    """Keeps the stamp, so without validation the entry would be used (and crash on its frames)."""
    cache = json.loads(text)
    first = sorted(cache["entries"])[0]
    cache["entries"][first]["frames"] = "many"
    cache["entries"][sorted(cache["entries"])[1]] = "not an entry"
    return json.dumps(cache)


@pytest.mark.parametrize("damage", [_damage_whole, _damage_shape, _damage_entries, _damage_one_entry])
def test_malformed_index_cache_is_rebuilt_with_a_warning(tree, warnings, damage):
    root, info = tree
    assert _prepared_paths(data.VideoFolder(root)) == sorted(info["good"])
    cache = os.path.join(root, INDEX_NAME)
    with open(cache, encoding="utf-8") as f:
        sound = json.load(f)
    with open(cache, "w", encoding="utf-8") as f:
        f.write(damage(json.dumps(sound)))
    del warnings[:]

    assert _prepared_paths(data.VideoFolder(root)) == sorted(info["good"])
    assert any(INDEX_NAME in w and ("rebuilding" in w or "probing those files again" in w) for w in warnings), warnings
    with open(cache, encoding="utf-8") as f:
        rebuilt = json.load(f)
    stamps = {k: v["stamp"] for k, v in sound["entries"].items()}
    assert {k: v["stamp"] for k, v in rebuilt["entries"].items()} == stamps
