"""Checkpoints that cannot be lost without a word (``lit_gpt.train.checkpoint_io``): atomic writes, the start-up check
that the run's folders can be written, and a save that fails mid-run (a full disk) stopping the run with one
``error:`` line and exit status 1, leaving the last good checkpoint, from which the run resumes bit for bit."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_gpt.cli import main
from lit_gpt.train.checkpoint_io import AtomicCheckpointIO, write_atomically
from lit_gpt.train.resume import check_resumable

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--trainer.log_every_n_steps", "1", "--samples.max_new_tokens", "0"]
"""configs/tiny.yaml (20 steps, validation and checkpoints after steps 10 and 20), every step's loss logged."""


class FullDisk(AtomicCheckpointIO):
    """Test-only ``CheckpointIO``, given to ``lit-gpt fit`` as a plugin (``--trainer.plugins``): after ``saves``
    checkpoints, each write stops part of the way with ``error`` (an errno), as a full disk or a folder that became
    read-only does."""

    def __init__(self, saves: int, error: int = errno.ENOSPC) -> None:
        super().__init__()
        self.saves, self.error = saves, error

    def serialize(self, checkpoint: dict, file) -> None:
        if self.saves == 0:
            file.write(b"\0" * 4096)  # part of a checkpoint, then the disk is full
            raise OSError(self.error, os.strerror(self.error))
        self.saves -= 1
        super().serialize(checkpoint, file)


def plugin(saves: int, error: int = errno.ENOSPC) -> str:
    return '{"class_path": "%s.FullDisk", "init_args": {"saves": %d, "error": %d}}' % (__name__, saves, error)


def losses(scalars, folder: Path) -> dict[int, float]:
    """train/loss of every step of the runs logged under ``folder/runs``, the later run winning."""
    found = {}
    for run in sorted((folder / "runs" / "tiny").glob("version_*")):
        found.update(dict(scalars(run)["train/loss"]))
    return found


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".ckpt"))


def test_a_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    target = tmp_path / "deeper" / "last.ckpt"
    write_atomically(target, lambda file: file.write(b"first"))
    assert target.read_bytes() == b"first"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0o600

    def fails_half_way(file):
        file.write(b"second, cut short")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="No space left on device"):
        write_atomically(target, fails_half_way)
    assert target.read_bytes() == b"first"  # the previous file, untouched
    assert leftovers(target.parent) == []  # no temporary file left behind


@pytest.fixture(scope="module")
def whole(tiny, tmp_path_factory):
    """The uninterrupted configs/tiny.yaml run that the interrupted one must repeat."""
    folder = tmp_path_factory.mktemp("whole")
    main(tiny(folder, *FLAGS))
    return folder


def fill_a_small_filesystem(tiny, whole: Path, folder: Path) -> subprocess.CompletedProcess:
    """``lit-gpt fit`` with its checkpoint folder on a tmpfs that holds two and a half checkpoints (user and mount
    namespaces: ``unshare -rm``): the two of step 10 fit, the first of step 20 does not. The tmpfs goes away with the
    process, so its files are copied to ``folder/kept`` first."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux) to mount a small tmpfs; the FullDisk plugin covers this case")
    size = (whole / "ckpt" / "last.ckpt").stat().st_size * 5 // 2 // 4096 * 4096
    disk, kept = folder / "disk", folder / "kept"
    disk.mkdir(parents=True)
    kept.mkdir()
    script = f'mount -t tmpfs -o size={size} tmpfs {disk} || exit 99; "$@"; rc=$?; cp -a {disk}/. {kept}/; exit $rc'
    args = tiny(folder, *FLAGS, "--checkpoint.dirpath", disk)
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "lit_gpt.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the FullDisk plugin covers this case")
    return result


@pytest.mark.parametrize("disk", ["tmpfs", "FullDisk plugin"])
def test_a_full_disk_stops_the_run_with_one_line_and_the_previous_checkpoint_resumes_bitwise(
    whole, tiny, scalars, errors, capsys, tmp_path, disk
):
    if disk == "tmpfs":
        result = fill_a_small_filesystem(tiny, whole, tmp_path)
        code, err, written, kept = result.returncode, result.stderr, tmp_path / "disk", tmp_path / "kept"
    else:
        with pytest.raises(SystemExit) as exit_info:
            main(tiny(tmp_path, *FLAGS, "--trainer.plugins", plugin(saves=2)))  # the 2 of step 10 are written
        code, err = exit_info.value.code, capsys.readouterr().err
        written = kept = tmp_path / "ckpt"
    assert code == 1 and "Traceback" not in err
    (line,) = errors(err)
    assert line.startswith("error: could not save checkpoint step000020-val_loss") and f"in {written} " in line
    assert "(No space left on device) at step 20, so training stopped" in line
    assert line.endswith(f"resume with --ckpt_path {written / 'last.ckpt'}")
    assert leftovers(kept) == []  # no temporary file left behind
    check_resumable(kept / "last.ckpt")  # intact: the whole checkpoint of step 10
    assert torch.load(kept / "last.ckpt", weights_only=False)["global_step"] == 10
    assert losses(scalars, tmp_path) == losses(scalars, whole)  # it trained to step 20 before the save failed

    shutil.rmtree(tmp_path / "runs")
    if kept != written:  # a tmpfs is gone with its process: its files, back in place
        shutil.copytree(kept, written, dirs_exist_ok=True)
    named = line.rsplit("--ckpt_path ", 1)[1]  # resume from the checkpoint that the error line names
    main(tiny(tmp_path, *FLAGS, "--checkpoint.dirpath", written, "--ckpt_path", named))
    assert torch.load(written / "last.ckpt", weights_only=False)["global_step"] == 20
    reference = losses(scalars, whole)
    assert losses(scalars, tmp_path) == {step: reference[step] for step in range(10, 20)}  # bitwise


def test_a_failed_first_save_is_one_line_even_when_lightning_saves_on_exception(tiny, errors, capsys, tmp_path):
    """ModelCheckpoint(save_on_exception=True) saves again while the run stops: that save writes nothing."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            tiny(
                tmp_path, *FLAGS, "--trainer.plugins", plugin(0, errno.EACCES), "--checkpoint.save_on_exception", "true"
            )
        )
    assert exit_info.value.code == 1
    (line,) = errors(capsys.readouterr().err)
    assert "(Permission denied) at step 10, so training stopped; it holds no readable checkpoint" in line
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_a_configured_checkpoint_plugin_is_kept_and_the_default_is_replaced(fit_args):
    from lit_gpt.train.lightning_cli import build_cli

    assert type(build_cli(fit_args()[1:], run=False).trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    configured = build_cli(fit_args("--trainer.plugins", plugin(3))[1:], run=False).trainer.strategy.checkpoint_io
    assert type(configured) is FullDisk and configured.saves == 3


@pytest.mark.parametrize("section", ["--checkpoint.dirpath", "--trainer.logger.init_args.save_dir"])
def test_a_folder_under_a_file_is_one_line_before_training(tiny, errors, capsys, tmp_path, section):
    """Root or not, nothing can be created below a regular file."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(tmp_path, section, tmp_path / "file" / "sub"))
    assert exit_info.value.code == 2
    (line,) = errors(capsys.readouterr().err)
    assert line.startswith("error: cannot write to the ") and f"{tmp_path / 'file' / 'sub'} (Not a directory)" in line
    assert not list(tmp_path.glob("**/version_*")) and not list(tmp_path.glob("**/*.ckpt"))  # before any training


def without_root_override() -> list[str]:
    """The command prefix that runs a process without the capability to write through permissions: none for a
    user other than root; for root, util-linux's ``setpriv`` dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
    the capabilities that the process can keep. Skips the test when neither is available."""
    if os.geteuid() != 0:
        return []
    drop = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop CAP_DAC_OVERRIDE here: {probe.stderr.strip()}")
    return prefix


@pytest.mark.parametrize("section", ["--checkpoint.dirpath", "--trainer.logger.init_args.save_dir"])
def test_a_folder_without_write_permission_is_one_line_before_training(tiny, errors, tmp_path, section):
    prefix = without_root_override()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)  # the umask may have left out bits
    args = tiny(tmp_path, section, locked)
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "lit_gpt.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = errors(result.stderr)
    assert line.startswith("error: cannot write to the ") and f"{locked} (Permission denied)" in line
    assert list(locked.iterdir()) == [] and not list(tmp_path.glob("**/version_*"))  # before training


@pytest.mark.slow
def test_a_failed_save_stops_every_rank_of_a_ddp_run_with_one_line(tiny, errors, tmp_path):
    """Only rank 0 writes: the failure is broadcast after the save and every rank stops together (none is left at
    Lightning's barrier, none crashes with a traceback); rank 0 alone prints the line."""
    args = tiny(tmp_path, *FLAGS, "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "6")
    faulty = '{"class_path": "tests.test_checkpoint_io.FullDisk", "init_args": {"saves": 2}}'
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])  # the plugin's module, for both ranks
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "lit_gpt.cli", *args, "--trainer.plugins", faulty],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr
    (line,) = errors(result.stderr)
    assert "(No space left on device) at step 20, so training stopped" in line
    ckpt = tmp_path / "ckpt"
    names = sorted(p.name for p in ckpt.iterdir())
    assert len(names) == 2 and names[0] == "last.ckpt" and names[1].startswith("step000010-")  # none removed
    assert torch.load(ckpt / "last.ckpt", weights_only=False)["global_step"] == 10
