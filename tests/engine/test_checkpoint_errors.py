"""Checkpoint files and the output file system: one ``error:`` line instead of a traceback.

A weights file that is not a checkpoint says what it is not (and never suggests turning the
safe loader off); a full disk or an unwritable folder names the file, the folder and the
cause; a Ctrl-C during a checkpoint write finishes the write, prints "interrupted" and how to
resume, and exits 130; a temporary file of a killed write is removed at the next start.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import shlex
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import levelset_rcnn.engine.checkpoint as ck
from levelset_rcnn.cli import main
from levelset_rcnn.commands._common import os_error_line

from .conftest import TINY_OVERRIDES

pytestmark = pytest.mark.timeout(300)


class _Thing:
    pass


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str | tuple[str, ...]]]:
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    good = tmp_path / "good.pth"
    ck.save_checkpoint(good, {"model": {"w": torch.ones(2000)}, "iteration": 1})
    files = {
        "empty": (b"", "it is empty"),
        "random": (b"\x17" + noise, "it is not a PyTorch file"),
        "random_pickle_like": (b"\x80\x02" + noise, ("it is truncated or corrupt",
                                                      "it is not a torch.save file")),
        "random_zip_like": (b"PK\x03\x04" + noise, "it is truncated or corrupt"),
        "truncated": (good.read_bytes()[:3000], "it is truncated or corrupt"),
    }
    out = {}
    for name, (data, what) in files.items():
        (tmp_path / f"{name}.pth").write_bytes(data)
        out[name] = (tmp_path / f"{name}.pth", what)
    torch.save({"model": _Thing()}, tmp_path / "objects.pth")
    out["objects"] = (tmp_path / "objects.pth", "it holds Python objects besides tensors")
    with open(tmp_path / "pickle.pth", "wb") as f:
        pickle.dump({"a": _Thing()}, f)
    out["pickle"] = (tmp_path / "pickle.pth", "it is not a torch.save file")
    torch.save(torch.ones(3), tmp_path / "tensor.pth")
    out["tensor"] = (tmp_path / "tensor.pth", "it holds a Tensor")
    return out


def test_not_a_checkpoint_is_named_without_a_traceback(tmp_path: Path, capsys) -> None:
    for name, (path, what) in _bad_files(tmp_path).items():
        for command in (["eval", "--weights", str(path), "--output", str(tmp_path / "ev")],
                        ["predict", str(path), "--weights", str(path), "--output",
                         str(tmp_path / "pr")]):
            assert main(command) == 1, (name, command[0])
            err = capsys.readouterr().err
            assert any(f"error: {path} is not a levelset-rcnn checkpoint: {w}" in err
                       for w in ((what,) if isinstance(what, str) else what)), err
            assert "weights_only=False" not in err and "Traceback" not in err


def test_full_disk_names_file_folder_and_cause(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run" / "checkpoint_last.pth"
    ck.save_checkpoint(path, {"iteration": 1, "w": torch.ones(4)})
    real = ck._open_temp

    class FullDisk(io.FileIO):
        written = 0

        def write(self, data):  # the disk fills up after 1000 bytes
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    def open_full(p):
        f, tmp = real(p)
        fd = os.dup(f.fileno())
        f.close()
        return FullDisk(fd, "wb"), tmp

    monkeypatch.setattr(ck, "_open_temp", open_full)
    with pytest.raises(OSError) as info:
        ck.save_checkpoint(path, {"iteration": 2, "w": torch.ones(100_000)})
    line = os_error_line(info.value)
    assert info.value.errno == errno.ENOSPC
    assert str(path) in line and "No space left on device" in line
    assert f"the disk holding {path.parent} is full" in line
    assert "enforce fail" not in line and "inline_container" not in line
    assert ck.load_checkpoint(path)["iteration"] == 1  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint_last.pth"]


def test_os_error_lines_name_the_folder() -> None:
    ro = OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out/metrics.jsonl")
    assert os_error_line(ro) == ("/mnt/ro/out/metrics.jsonl: Read-only file system "
                                 "(/mnt/ro/out is on a read-only file system)")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/results.json")
    assert "the disk holding /data/out is full" in os_error_line(full)
    assert os_error_line(FileNotFoundError("weights file x.pth does not exist")) == \
        "weights file x.pth does not exist"


def test_unwritable_output_folder_is_an_error_line(tmp_path: Path, capsys) -> None:
    probe = Path("/sys/levelset_rcnn_test_out")
    try:
        probe.mkdir()
    except OSError:
        pass
    else:  # pragma: no cover - a writable /sys
        probe.rmdir()
        pytest.skip("/sys is writable here")
    out = f"{probe}/run"
    assert main(["train", "--output", out, *TINY_OVERRIDES]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: /sys/levelset_rcnn_test_out") and "Traceback" not in err


def test_ctrl_c_during_a_checkpoint_write(tiny_data_root: Path, tmp_path: Path, monkeypatch,
                                          capsys) -> None:
    out = tmp_path / "run"
    (out).mkdir()
    stale = out / ".checkpoint_last.pth.k1ll3d.tmp"  # a write killed in an earlier life
    stale.write_bytes(b"partial")
    real = ck._open_temp
    sent = []

    class Interrupting(io.FileIO):
        def write(self, data):
            if not sent:  # Ctrl-C in the middle of the first checkpoint write
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)
            return super().write(data)

    def open_interrupting(p):
        f, tmp = real(p)
        fd = os.dup(f.fileno())
        f.close()
        return Interrupting(fd, "wb"), tmp

    monkeypatch.setattr(ck, "_open_temp", open_interrupting)
    argv = ["train", "--output", str(out), "--no-progress", "--no-tensorboard",
            *TINY_OVERRIDES, f"data.root={tiny_data_root}"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert sent and "Traceback" not in err
    assert "interrupted; the last checkpoint is" in err and "(iteration 2)" in err
    hint = err.split("continue with: ", 1)[1].strip()
    assert hint.startswith("levelset-rcnn train ") and hint.endswith(" --resume")
    assert "--overwrite" not in hint
    assert ck.load_checkpoint(out / "checkpoint_last.pth")["iteration"] == 2  # complete
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(ck, "_open_temp", real)
    assert main(shlex.split(hint)[1:]) == 0  # the printed command continues the run
    assert ck.load_checkpoint(out / "model_final.pth")["iteration"] == 4


def test_corrupt_resume_checkpoint_is_an_error_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint_last.pth").write_bytes(b"\x00" * 100)
    assert main(["train", "--output", str(out), "--resume", *TINY_OVERRIDES]) == 1
    err = capsys.readouterr().err
    assert f"error: {out / 'checkpoint_last.pth'} is not a levelset-rcnn checkpoint" in err


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    for name in (".checkpoint_last.pth.abc.tmp", ".model_final.pth.x.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "notes.tmp").write_text("not ours")
    removed = ck.remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint_last.pth.abc.tmp",
                                               ".model_final.pth.x.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.tmp"]
