"""global_batch_size: one config reproduces the recipe's batch per optimizer step on any process count."""
import pytest

import main
from conftest import DROP
from engine.accumulate import split_global_batch
from engine.checkpoint import CheckpointManager, load_checkpoint


@pytest.mark.parametrize("total, processes, limit, expected", [
    (1024, 1, 256, (256, 4)),      # one GPU: 4 accumulation steps of 256
    (1024, 8, 256, (1024, 1)),     # 8 GPUs x 128 fit at once
    (1024, 4, 200, (512, 2)),      # 4 x 128 twice (4 x 256 is over the limit)
    (512, 2, None, (512, 1)),      # no limit: no accumulation
    (96, 4, 16, (48, 2)),          # 4 x 12 twice (4 x 24 is over the limit)
    (1024, 3, 256, None),          # 1024 images cannot be split over 3 processes
])
def test_split_global_batch(total, processes, limit, expected):
    assert split_global_batch(total, processes, limit) == expected


@pytest.fixture
def write(tiny_config):
    """The tiny config with a global batch of 32 (and no batch_size, which it replaces)."""
    return lambda name, **changes: tiny_config(name, **{"synthetic_val_size": 8, "batch_size": DROP,
                                                        "global_batch_size": 32, **changes})


def test_the_run_says_how_it_makes_the_global_batch(tmp_path, capsys, write):
    assert main.main([write("g", max_batch_per_process=8)]) == 0
    assert "32 images per optimizer step = 1 process(es) x 8 x 4 accumulation step(s)" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "exp" / "g" / "checkpoints" / "last.pth")
    assert state["global_step"] == 2 and state["config"]["grad_accum_steps"] == 4


@pytest.mark.parametrize("changes, words", [({"batch_size": 16}, "global_batch_size derives batch_size"),
                                            ({"grad_accum_steps": 2}, "derives grad_accum_steps"),
                                            ({"global_batch_size": None, "max_batch_per_process": 8},
                                             "max_batch_per_process applies with global_batch_size")])
def test_contradicting_batch_keys_are_one_sentence(capsys, changes, words, write):
    assert main.main([write("bad", **changes)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err, err


def test_resume_on_another_split_continues_at_the_same_sample(tmp_path, monkeypatch, capsys, write):
    """Stopped after 2 of the epoch's 4 optimizer steps, made of 4 micro-batches each, resumed with 2 larger
    ones: the run continues after the same 64 samples and takes the same number of steps."""
    path = write("split", max_batch_per_process=8, recovery_every=1, synthetic_train_size=128)
    original = CheckpointManager.save_recovery

    def stop_after_step_2(self, payload, step):
        original(self, payload, step)
        if step == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(CheckpointManager, "save_recovery", stop_after_step_2)
    assert main.main([path]) == 130
    monkeypatch.setattr(CheckpointManager, "save_recovery", original)
    state = load_checkpoint(tmp_path / "exp" / "split" / "checkpoints" / "recovery-2.pth")
    assert (state["global_step"], state["batch"]) == (2, 8)
    capsys.readouterr()
    assert main.main([path, "--set", "max_batch_per_process=16"]) == 0
    assert "at epoch 1, batch 4" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "exp" / "split" / "checkpoints" / "last.pth")
    assert state["global_step"] == 4 and state["config"]["grad_accum_steps"] == 2
