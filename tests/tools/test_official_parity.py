"""Official-training parity: tools/parity.py replays float64 runs of the official code (../shared fixtures)
and a ReXNet run of timm's own components (tools/make_rexnet_fixture.py) through this project's
ClassificationAgent + Trainer, and must match every step and the final weights, masks, logits and EMA
within 1e-9; a perturbed fixture must fail, and bad input must be one sentence."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, shared_path

PARITY, MAKE_REXNET = str(ROOT / "tools" / "parity.py"), str(ROOT / "tools" / "make_rexnet_fixture.py")
FIXTURES = ("condensenet_cifar_cosine", "condensenetv2_cifar_warmup_cosine")


def run(script, *args):
    return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["plain", "memory_efficient"])
@pytest.mark.parametrize("name", FIXTURES)
def test_official_fixture_parity(name, memory_efficient):
    fixture = shared_path("fixtures", "parity", name)
    r = run(PARITY, fixture, *(["--memory-efficient"] if memory_efficient else []))
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "parity PASS" in r.stdout and f"memory_efficient {'on' if memory_efficient else 'off'}" in r.stdout


def test_a_changed_initial_weight_fails(tmp_path):
    source = shared_path("fixtures", "parity", FIXTURES[0])
    fixture = tmp_path / "perturbed"
    shutil.copytree(source, fixture)
    init = torch.load(fixture / "init_state_dict.pth", weights_only=True)
    init["features.init_conv.weight"].view(-1)[0] += 1e-6
    torch.save(init, fixture / "init_state_dict.pth")
    r = run(PARITY, fixture)
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "parity FAIL" in r.stdout and "final eval logits" in r.stdout


def test_bad_input_is_one_sentence(tmp_path):
    r = run(PARITY, tmp_path / "nope")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: fixture folder") and "\n" not in r.stderr.strip()
    fixture = tmp_path / "step_schedule"
    shutil.copytree(shared_path("fixtures", "parity", FIXTURES[0]), fixture)
    meta = json.loads((fixture / "meta.json").read_text())
    meta["recipe"]["schedule"] = "step"
    (fixture / "meta.json").write_text(json.dumps(meta))
    r = run(PARITY, fixture)
    assert r.returncode == 2, r.stdout + r.stderr[-2000:]
    assert r.stderr.strip() == "error: recipe schedule 'step' is not supported; use one of cosine, multistep"


def test_recipe_fields_map_onto_the_official_semantics():
    # multistep (official CondenseNet CIFAR, odd E = 5), group lasso, all-parameter decay, EMA without warmup
    from tools.parity import recipe_config
    from utils.config import resolve
    from utils.errors import ConfigError
    from engine.schedules import LRSchedule
    recipe = {"seed": 0, "epochs": 5, "iters_per_epoch": 2, "batch_size": 4, "lr": 0.1, "momentum": 0.9,
              "nesterov": True, "weight_decay": 1e-4, "weight_decay_mode": "all", "schedule": "multistep",
              "warmup_epochs": 0, "warmup_lr": 0.0, "lr_step": "iter", "label_smoothing": 0.0,
              "group_lasso_lambda": 1e-5, "ema_decay": 0.99}
    cfg = resolve({"exp_name": "t", "agent": "ClassificationAgent", "model": "condensenet_50", "dataset": "synthetic",
                    "num_classes": 10, **recipe_config(recipe)})
    assert (cfg.group_lasso_lambda, cfg.weight_decay_mode, cfg.ema, cfg.ema_decay, cfg.ema_warmup) == \
        (1e-5, "all", True, 0.99, False)
    s = LRSchedule(cfg.lr_schedule, cfg.lr, 2, cfg.max_epoch, cfg.warmup_epochs, cfg.warmup_lr, cfg.lr_milestones,
                   cfg.lr_gamma, lr_step=cfg.lr_step)
    # epochs 0-2 at 0.1, epoch 3 (>= 2.5) at 0.01, epoch 4 (>= 3.75) at 0.001
    assert [s.lr_at(t) for t in range(10)] == pytest.approx([0.1] * 6 + [0.01] * 2 + [0.001] * 2, rel=1e-12)
    with pytest.raises(ConfigError, match="recipe field 'mixup' is not supported"):
        recipe_config({**recipe, "mixup": 0.2})


@pytest.fixture(scope="module")
def rexnet_fixture(tmp_path_factory):
    dest = tmp_path_factory.mktemp("rexnet") / "fixture"
    r = run(MAKE_REXNET, dest)
    assert r.returncode == 0, r.stderr[-2000:]
    return dest


def test_rexnet_timm_fixture_parity(rexnet_fixture):
    meta = json.loads((rexnet_fixture / "meta.json").read_text())
    assert meta["recipe"]["lr_step"] == "epoch" and len(meta["trajectory"]) == 12
    assert "stem.conv.weight" in torch.load(rexnet_fixture / "init_state_dict.pth", weights_only=True)  # timm layout
    r = run(PARITY, rexnet_fixture)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "builder rexnet_0_9" in r.stdout and "EMA eval logits" in r.stdout


@pytest.mark.slow
def test_rexnet_fixture_fails_with_the_per_iteration_schedule(rexnet_fixture):
    r = run(PARITY, rexnet_fixture, "--lr-step", "iter")
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "lr_step iter" in r.stdout
    lr_line = next(line for line in r.stdout.splitlines() if line.startswith("max |lr - official|"))
    assert lr_line.split()[-1] == "FAIL"
