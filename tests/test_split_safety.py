"""A split is written as one set, no split comes out unusable, and a damaged split is one clear error.

Each fault is made for real, met where the user meets it (the scripts' command lines), and every
refusal is checked to leave the previous split's files byte for byte.
"""
import errno
import os

import pytest

from scenes.cli import UserError
from scenes.files import write_together


def folder_bytes(folder):
    """{name: bytes} of every file in ``folder`` (temporaries and markers included)."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


# ---------------------------------------------------------------------------------------------
# write_together: the old set or the new one

def old_and_new(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    names = ["a.csv", "b.csv", "info.json"]
    write_together({str(folder / n): f"old {n}\n".encode() for n in names}, str(folder / "marker"))
    return folder, {str(folder / n): f"new {n}\n".encode() for n in names}


def test_a_failure_while_staging_leaves_every_previous_file(tmp_path, monkeypatch):
    folder, new = old_and_new(tmp_path)
    before = folder_bytes(folder)
    calls, real_fsync = [], os.fsync

    def fsync_full_on_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_full_on_second_file)
    with pytest.raises(UserError, match="the disk is full"):
        write_together(new, str(folder / "marker"))
    assert folder_bytes(folder) == before  # no staged file, no marker, nothing renamed


def test_a_failure_among_the_renames_leaves_the_marker(tmp_path, monkeypatch):
    folder, new = old_and_new(tmp_path)
    renames, real_replace = [], os.replace

    def replace_fails_on_second_rename(src, dst):
        if src.endswith(".new"):
            renames.append(dst)
            if len(renames) == 2:
                raise OSError(errno.EIO, "Input/output error", src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_fails_on_second_rename)
    with pytest.raises(UserError, match="torn set"):
        write_together(new, str(folder / "marker"))
    after = folder_bytes(folder)
    assert sorted(after) == ["a.csv", "b.csv", "info.json", "marker"]  # the staged files are gone
    assert after["a.csv"] == b"new a.csv\n" and after["b.csv"] == b"old b.csv\n"


def test_a_complete_write_leaves_no_marker_nor_staged_file(tmp_path):
    folder, new = old_and_new(tmp_path)
    write_together(new, str(folder / "marker"))
    assert folder_bytes(folder) == {os.path.basename(path): data for path, data in sorted(new.items())}
