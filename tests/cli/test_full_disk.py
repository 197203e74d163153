"""Writes on real file systems that fail: a tmpfs that fills up, a file-size limit (RLIMIT_FSIZE: Python
ignores SIGXFSZ, so writes fail with EFBIG), temporaries left by killed processes, and the umask. Each
failure runs main.py in a subprocess: exit 2, one ``error:`` sentence naming the file and the OS's
reason, no traceback, no temporary left, the previous file intact; the same command then resumes."""
import os
import resource
import stat
import struct
import subprocess
import sys

import pytest
import torch

import main
from graphs.models import create_model
from conftest import ROOT, TINY, write_config
from engine.checkpoint import load_checkpoint
from utils.atomic_io import temporary_path


def config(root, name, **changes):
    """The tiny config, 2 steps for 1 epoch, its experiment folder right under ``root``."""
    return write_config(root, name, exp_root=str(root), **{"synthetic_train_size": 32, "synthetic_val_size": 32,
                                                           "deterministic": True, **changes})


def run(cfg, *args, fsize=None, umask=None):
    """``main.py cfg args`` in a subprocess, under a file-size limit (bytes) and/or a umask."""
    def setup():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if umask is not None:
            os.umask(umask)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), cfg, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, preexec_fn=setup)


def temporaries(root):
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in files + dirs if ".tmp-" in n]


def assert_write_error(proc, path, reason):
    """Exit 2 with one sentence that names ``path`` and ``reason``, and no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith(f"error: could not write {path} ({reason})"), lines[-1]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    return lines[-1]


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root; skipped otherwise), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:   # lazy: the in-process run's log file may still be open
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_write_then_resume(tmpfs):
    cfg = config(tmpfs, "full")
    assert main.main([cfg]) == 0                                      # epoch 1: last.pth and best.pth
    last = tmpfs / "full" / "checkpoints" / "last.pth"
    before = last.read_bytes()
    # leave half a checkpoint free: the small files of epoch 2 fit, its checkpoint's temporary does not
    st = os.statvfs(tmpfs)
    filler = tmpfs / "filler"
    filler.write_bytes(bytes(st.f_bavail * st.f_frsize - len(before) // 2))

    message = assert_write_error(run(cfg, "--set", "max_epoch=2"), last, "No space left on device")
    assert "the previous file is intact" in message
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1
    assert temporaries(tmpfs) == []

    filler.unlink()                                                   # room again: the same command resumes
    done = run(cfg, "--set", "max_epoch=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr and load_checkpoint(last)["epoch"] == 2
    assert temporaries(tmpfs) == []


@pytest.mark.slow
def test_file_size_limit_on_checkpoint_export_and_plot(tmp_path):
    cfg = config(tmp_path, "fsize")
    assert main.main([cfg]) == 0
    root = tmp_path / "fsize"
    last = root / "checkpoints" / "last.pth"
    before = last.read_bytes()
    limit = 32 * 1024    # above the logs, config.json, metrics.csv and the ONNX file; below a checkpoint

    message = assert_write_error(run(cfg, "--set", "max_epoch=2", fsize=limit), last, "File too large")
    assert "ulimit -f" in message and "the previous file is intact" in message
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1

    # the ONNX file fits, the OpenVINO .xml does not: OpenVINO's own writer fails ("iostream error")
    out = root / "out"
    assert_write_error(run(cfg, "--mode", "export", "--set", 'export_formats=["onnx","openvino"]', fsize=limit),
                       out / "fsize.xml", "File too large")
    assert (out / "fsize.onnx").stat().st_size > 0
    assert not (out / "fsize.xml").exists() and not (out / "fsize.bin").exists()
    assert_write_error(run(cfg, "--mode", "export", "--set", 'export_formats=["onnx"]', fsize=16 * 1024),
                       out / "fsize.onnx", "File too large")
    assert_write_error(run(cfg, "--mode", "validate", fsize=16 * 1024), out / "confusion_matrix.png",
                       "File too large")
    assert temporaries(root) == []

    assert main.main([cfg, "--set", "max_epoch=2"]) == 0              # no limit: it resumes and finishes
    assert load_checkpoint(last)["epoch"] == 2


def test_stale_temporaries_are_removed_at_the_start_of_validate(tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save(create_model(TINY["model"], num_classes=TINY["num_classes"], **TINY["model_args"]).state_dict(),
               weights)
    cfg = config(tmp_path, "stale", checkpoint=str(weights))
    root = tmp_path / "stale"
    for sub in ("checkpoints", "out"):
        os.makedirs(root / sub)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = [temporary_path(root / "config.json", pid=gone.pid),
             temporary_path(root / "checkpoints" / "last.pth", pid=gone.pid),
             temporary_path(root / "out" / "stale.xml", pid=gone.pid)]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"half")
    scratch = temporary_path(root / "out" / "runtimes", pid=gone.pid)    # a killed benchmark's folder
    os.mkdir(scratch)
    open(os.path.join(scratch, "m.onnx"), "wb").close()
    live = temporary_path(root / "checkpoints" / "best.pth", pid=os.getpid())   # this test process runs
    with open(live, "wb") as f:
        f.write(b"being written")

    done = run(cfg, "--mode", "validate")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p for p in stale + [scratch] if os.path.exists(p)] == []
    assert open(live, "rb").read() == b"being written"


@pytest.mark.slow
def test_written_files_follow_the_umask(tmp_path):
    cfg = config(tmp_path, "umask")
    umask = 0o027                      # 0640: neither mkstemp's 0600 nor the usual 0644
    done = run(cfg, umask=umask)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(cfg, "--mode", "export", "--set", 'export_formats=["onnx","torchscript","openvino"]', umask=umask)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "umask"
    files = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
    names = {os.path.relpath(p, root) for p in files}
    for expected in ("config.json", "metrics.csv", "checkpoints/last.pth", "out/training_curves.png",
                     "out/umask.onnx", "out/umask.torchscript.pt", "out/umask.xml", "out/umask.bin",
                     "out/export.json", "logs/train.log"):
        assert expected in names, sorted(names)
    modes = {os.path.relpath(p, root): oct(stat.S_IMODE(os.stat(p).st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_event_file_on_a_failing_disk_is_one_sentence_and_readable(tmp_path):
    """A failed append ends in WriteError (tensorboardX's writer thread would die and then block the
    run forever); TensorBoard reads every complete record and skips the cut-off last one."""
    script = ("import sys\nfrom engine.loggers import EventFile\nfrom utils.errors import WriteError\n"
              "events = EventFile(sys.argv[1])\ntry:\n    for i in range(10000):\n"
              "        events.scalar('loss/train', i / 4, i)\n    events.flush()\n"
              "except WriteError as e:\n    print(e)\n")
    folder = tmp_path / "summaries"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = folder.iterdir()
    assert done.stdout.startswith(f"could not write {path} (File too large)"), done.stdout
    data = path.read_bytes()
    assert len(data) == 4096
    complete, pos = 0, 0          # the records' framing: u64 length, u32 CRC, data, u32 CRC
    while pos + 12 <= len(data) and pos + 16 + struct.unpack("<Q", data[pos:pos + 8])[0] <= len(data):
        pos += 16 + struct.unpack("<Q", data[pos:pos + 8])[0]
        complete += 1
    assert pos < len(data), "the file ends inside a record"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    scalars = acc.Scalars("loss/train")
    assert len(scalars) == complete - 1 > 50          # all but the file-version record
    assert [(s.step, s.value) for s in scalars] == [(i, i / 4) for i in range(len(scalars))]
