"""Config errors: each class gets exit code 2 and one sentence (no traceback)."""
import json
import subprocess
import sys

import pytest

import main
from conftest import ROOT
from tools.config_docs import markdown_table
from utils.config import SCHEMA, SECTIONS, apply_overrides, load_config, parse_overrides
from utils.errors import ConfigError

BASE = {"exp_name": "t", "agent": "ClassificationAgent", "model": "densenet_bc_100", "dataset": "synthetic",
        "num_classes": 10}


def write(tmp_path, data, name="c.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def run_main(capsys, argv):
    code = main.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_sentence(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("change, needles", [
    ({"batch_sise": 64}, ["unknown key 'batch_sise'", "did you mean 'batch_size'"]),
    ({"batch_size": "64"}, ["'batch_size' must be an integer", '"64"']),
    ({"batch_size": 0}, ["'batch_size' must be >= 1"]),
    ({"lr": -0.1}, ["'lr' must be >= 0"]),
    ({"nesterov": 1}, ["'nesterov' must be true or false"]),
    ({"lr_schedule": "cosin"}, ["'lr_schedule' must be one of", "did you mean 'cosine'"]),
    ({"lr_step": "epochs"}, ["'lr_step' must be one of iter, epoch", "did you mean 'epoch'"]),
    ({"lr_step": "epoch", "warmup_iters": 500}, ["warmup_iters counts optimizer steps", "set warmup_epochs"]),
    ({"agent": "ClasificationAgent"}, ["unknown agent", "ClassificationAgent"]),
    ({"model": "densenet_bc_10"}, ["unknown model 'densenet_bc_10'", "valid models are", "densenet_bc_100"]),
    ({"dataset": "cifar"}, ["unknown dataset 'cifar'", "cifar10"]),
    ({"model_args": {"growht": [12, 12, 12]}}, ["has no argument 'growht'", "did you mean 'growth'"]),
    ({"amp": "fp16", "device": "cpu"}, ["needs a CUDA device"]),
    ({"warmup_epochs": 5, "max_epoch": 5}, ["warmup_epochs (5) must be shorter than max_epoch (5)"]),
    ({"mode": "trian"}, ["'mode' must be one of", "did you mean 'train'"]),
    ({"num_classes": None}, ["dataset 'synthetic' needs num_classes"]),
])
def test_config_errors(tmp_path, capsys, change, needles):
    cfg = {**BASE, **change, "exp_root": str(tmp_path / "exp")}
    code, err = run_main(capsys, [write(tmp_path, cfg)])
    assert_one_sentence(code, err, *needles)


def test_missing_required_key(tmp_path, capsys):
    cfg = {k: v for k, v in BASE.items() if k != "model"}
    assert_one_sentence(*run_main(capsys, [write(tmp_path, cfg)]), "missing the required key 'model'")


def test_malformed_json_names_line_and_column(tmp_path, capsys):
    path = write(tmp_path, '{\n  "exp_name": "t",\n  "agent": "ClassificationAgent"\n  "model": "x"\n}')
    assert_one_sentence(*run_main(capsys, [path]), "is not valid JSON", "line 4, column 3", path)


def test_missing_config_file(tmp_path, capsys):
    assert_one_sentence(*run_main(capsys, [str(tmp_path / "nope.json")]), "does not exist")


def test_bad_set_syntax(tmp_path, capsys):
    path = write(tmp_path, {**BASE, "exp_root": str(tmp_path)})
    assert_one_sentence(*run_main(capsys, [path, "--set", "max_epoch"]), "--set expects key=value")


def test_set_overrides_parse_json_and_dotted_keys():
    data = apply_overrides({"model_args": {}}, parse_overrides(
        ["max_epoch=3", "lr=0.05", "model_args.stages=[8,8,8]", "data_root=/tmp/x", "ema=true", "resume=null"]))
    assert data == {"model_args": {"stages": [8, 8, 8]}, "max_epoch": 3, "lr": 0.05, "data_root": "/tmp/x",
                    "ema": True, "resume": None}


def test_defaults_and_overrides_resolve(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["batch_size=32", "model_args.growth=[6,6,6]"], mode="validate")
    assert cfg.batch_size == 32 and cfg.mode == "validate" and cfg.model_args == {"growth": [6, 6, 6]}
    assert cfg.lr == 0.1 and cfg.validate_every == 1 and cfg.val_batch_size is None
    from agents import ClassificationAgent
    with pytest.raises(ConfigError, match="unknown model"):    # names are checked where they are assembled
        ClassificationAgent.check_config(load_config(write(tmp_path, BASE), ["model=nope"]))


def test_bad_model_args_value_is_one_sentence(tmp_path, capsys):
    cfg = {**BASE, "exp_root": str(tmp_path), "model_args": {"stages": [4, 4], "growth": [12, 12, 12]},
           "mode": "flops"}
    assert_one_sentence(*run_main(capsys, [write(tmp_path, cfg)]), "must be non-empty lists of the same length")


def test_docs_key_tables_are_current():
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert markdown_table() in docs, "regenerate docs/configuration.md with: python tools/config_docs.py"


def test_docs_key_tables_list_every_key_once_under_its_section():
    """Every key has exactly one row, under the heading of its schema section; the eight sections in order."""
    section, rows = None, []
    for line in markdown_table().splitlines():
        if line.startswith("### "):
            section = next(name for name, title in SECTIONS.items() if title == line[4:])
        elif line.startswith("| `"):
            rows.append((section, line.split("|")[1].strip(" `")))
    assert rows == [(o.section, o.name) for o in SCHEMA]
    assert list(SECTIONS) == ["run", "data", "model", "optimisation", "recipe", "detection", "deploy", "benchmark"]
    assert len({name for _, name in rows}) == len(rows)


def test_docs_script_rewrites_a_stale_page(tmp_path):
    """``python tools/config_docs.py`` puts the tables back into a page whose tables are out of date."""
    page = ROOT / "docs" / "configuration.md"
    text = page.read_text()
    stale = text.replace("| `lr` |", "| `lr_old` |")
    assert stale != text
    page.write_text(stale)
    try:
        subprocess.run([sys.executable, str(ROOT / "tools" / "config_docs.py")], check=True, cwd=tmp_path)
        assert page.read_text() == text
    finally:
        page.write_text(text)


def test_cli_subprocess_prints_one_sentence(tmp_path):
    path = write(tmp_path, {**BASE, "batch_size": -1})
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), path], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: key 'batch_size' must be >= 1, got -1"
    r = subprocess.run(["sh", str(ROOT / "run.sh")], capture_output=True, text=True)
    assert r.returncode == 2 and "Usage: sh run.sh CONFIG" in r.stdout


@pytest.mark.parametrize("path", sorted(set((ROOT / "configs").rglob("*.json")) - {ROOT / "configs" / "schema.json"}),
                         ids=lambda p: p.name)
def test_shipped_configs_validate_and_name_their_model(path):
    cfg = load_config(str(path))
    assert cfg.exp_name == path.stem, "a config's exp_name must equal its file name"
    from agents import get_agent_class
    get_agent_class(cfg.agent).check_config(cfg)


def test_resolved_config_is_read_only_and_replace_gives_a_changed_copy(tmp_path):
    cfg = load_config(write(tmp_path, {**BASE, "model_args": {"stages": [2, 2]}}))
    for assign in (lambda: setattr(cfg, "lr", 0.5), lambda: cfg.__setitem__("lr", 0.5),
                   lambda: delattr(cfg, "lr"), lambda: cfg.__delitem__("lr")):
        with pytest.raises(TypeError, match="read-only"):
            assign()
    cfg.model_args["stages"].append(9)           # a reader's copy: the config keeps its own
    cfg.synthetic_shape[0] = 1
    assert cfg.model_args == {"stages": [2, 2]} and cfg.synthetic_shape == [3, 32, 32]
    changed = cfg.replace(lr=0.5, model_args={"stages": [4]})
    assert (changed.lr, changed.model_args, cfg.lr, cfg.model_args) == (0.5, {"stages": [4]}, 0.1, {"stages": [2, 2]})
    with pytest.raises(KeyError, match="lr_max"):
        cfg.replace(lr_max=1.0)
    plain = dict(cfg)
    plain["lr"] = 0.5
    assert cfg.lr == 0.1 and json.loads(json.dumps(plain))["exp_name"] == "t"


@pytest.mark.parametrize("mode, keys, amp, channels_last", [
    ("flops", {"amp": "fp16"}, "none", False),        # fp16 is the recipe's training precision: fp32 here
    ("flops", {"amp": "bf16"}, "bf16", False),
    ("train", {}, "none", True),                      # null: on for fp32 training on the CPU
    ("train", {"amp": "bf16"}, "bf16", False),
    ("train", {"channels_last": False}, "none", False),
])
def test_agent_resolves_the_device_dependent_keys_once(tmp_path, mode, keys, amp, channels_last):
    """What docs/configuration.md says of ``amp`` and ``channels_last: null`` on the CPU, read from the
    config the agent (and so its loaders and trainer) uses."""
    from agents import build_agent
    from engine.loggers import close_logging
    cfg = load_config(write(tmp_path, {**BASE, "exp_root": str(tmp_path / "exp"), "device": "cpu", "mode": mode,
                                       "model_args": {"stages": [2, 2, 2], "growth": [4, 4, 4]}, **keys}))
    agent = build_agent(cfg)
    try:
        assert (agent.config.amp, agent.config.channels_last) == (amp, channels_last)
        assert cfg.channels_last == keys.get("channels_last")       # the loaded config is left as it was
        with pytest.raises(TypeError):
            agent.config.amp = "bf16"
    finally:
        agent.finalize()
        agent.experiment.close(failed=True)
        close_logging()         # as main.py does: the removed folder's log file must not be written again
