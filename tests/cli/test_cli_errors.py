"""Every mistake in the command line is one sentence (exit 2) before any work, through main.py in a subprocess."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def run(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def one_sentence(r, *words):
    """Exit 2 with a single `error:` sentence (the last line of stderr) holding ``words``, and no traceback."""
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("error: ") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    err = "error: " + r.stderr.split("error: ")[1]
    assert err.endswith("\n") and "\n" not in err.strip(), err
    assert all(w in err for w in words), err
    return err


@pytest.mark.parametrize("override, words", [(["--set", "lr=NaN"], ("lr is NaN",)),
                                             (["--set", "weight_decay=-Infinity"], ("weight_decay is -Infinity",)),
                                             (["--set", "model_args.growth=[4,Infinity]"],
                                              ("model_args.growth[1] is Infinity",))])
def test_non_finite_numbers_are_refused(tiny_config, override, words):
    one_sentence(run(tiny_config(), *override), *words, "finite")


def test_non_finite_number_in_the_file_is_refused(tiny_config):
    path = Path(tiny_config("f"))
    path.write_text(path.read_text().replace('"lr": 0.05', '"lr": Infinity'))
    one_sentence(run(path), "lr is Infinity")


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "..", ""])
def test_exp_name_is_a_plain_folder_name(tmp_path, tiny_config, name):
    one_sentence(run(tiny_config(), "--set", f"exp_name={json.dumps(name)}"), "exp_name", "plain folder name")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "exp").exists()


def test_a_set_key_given_twice_is_refused(tiny_config):
    one_sentence(run(tiny_config(), "--set", "lr=0.1", "max_epoch=2", "lr=0.2"), "lr twice", "lr=0.1", "lr=0.2")
    one_sentence(run(tiny_config(), "--set", "lr=0.1", "--set", "lr=0.2"), "lr twice", "lr=0.1", "lr=0.2")


def test_repeated_set_flags_all_apply(tmp_path, tiny_config):
    """``--set a=1 --set b=2`` is two overrides: an earlier flag is not dropped (its exp_root would be)."""
    r = run(tiny_config(), "--mode", "flops", "--set", "input_size=24", "--set", f"exp_root={tmp_path / 'other'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "at 24x24" in r.stdout + r.stderr and (tmp_path / "other" / "tiny").is_dir()


@pytest.mark.parametrize("nproc, words", [("0", ("--nproc must be at least 1",)),
                                          ("3", ("batch_size 16", "multiple of --nproc 3"))])
def test_nproc_is_checked_before_launching(tmp_path, tiny_config, nproc, words):
    err = one_sentence(run(tiny_config(), "--nproc", nproc), *words)
    assert "torch.distributed" not in err
    assert not (tmp_path / "exp").exists()


def test_nproc_on_a_cuda_device_without_cuda(tiny_config):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal needs a machine without it")
    one_sentence(run(tiny_config(device="cuda"), "--nproc", "2"), "CUDA is not available")


@pytest.mark.slow
def test_resume_with_another_batch_and_nan_loss_messages(tmp_path, tiny_config):
    path = tiny_config("nan", lr=1e9, max_epoch=2)
    err = one_sentence(run(path), "NaN or infinite", "no checkpoint has been written yet")
    assert "intact" not in err
    path = tiny_config("ok")
    assert run(path).returncode == 0
    last = tmp_path / "exp" / "ok" / "checkpoints" / "last.pth"
    one_sentence(run(path, "--set", "max_epoch=2", "batch_size=32"), "batch_size 16", "32", "exp_name")
    err = one_sentence(run(path, "--set", "max_epoch=2", "lr=1e9"), "NaN or infinite", f"{last}, is intact")
    one_sentence(run(path, "--set", "max_epoch=3", "warmup_iters=12"), "warmup_iters (12)", "12 optimizer steps")


def test_int8_export_at_another_size_than_its_calibration_images_writes_nothing(tmp_path, tiny_config):
    path = tiny_config("x", model="rexnet_1_0", model_args={}, synthetic_shape=[3, 32, 32],
                 export_formats=["onnx_int8"], calibration_size=4)
    one_sentence(run(path, "--mode", "export"), "training images, which are 32x32", "224x224", "input_size")
    out = tmp_path / "exp" / "x" / "out"
    assert not out.exists() or not any(out.iterdir())


def test_an_input_too_small_for_the_official_final_pool_is_one_sentence(tiny_config):
    path = tiny_config("p", model="cdnv2_110", model_args={"stages": [1, 1, 1], "growth": [4, 4, 4]})
    one_sentence(run(path), "8x8 average pool", "32x32 inputs", "input_size")
