"""tools/paper_tables.py --results: each paper row's published top-1 beside what its run measured."""
import csv
import json

from tests.conftest import ROOT
from tools import paper_tables


def _row(out: str, config: str) -> list:
    """The cells of ``config``'s row in the printed tables."""
    for line in out.splitlines():
        if line.startswith(f"| `{config}` |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row for {config} in:\n{out}")


def _val_top1(folder) -> list:
    with open(folder / "metrics.csv", newline="") as f:
        return [float(r["val_top1"]) for r in csv.DictReader(f)]


def test_results_rows_are_the_runs_metrics_and_missing_runs_are_marked(tmp_path, cifar10_root, capsys):
    import main
    exp = tmp_path / "experiments"
    common = ["max_epoch=1", "train_subset=64", "val_subset=64", f"data_root={cifar10_root}", f"exp_root={exp}",
              "device=cpu", "model_args.stages=[2,2,2]"]
    assert main.main([str(ROOT / "configs" / "condensenet_86_cifar10.json"), "--set", *common]) == 0
    assert main.main([str(ROOT / "configs" / "cdnv2_110_cifar10.json"), "--set", *common, "batch_size=32"]) == 0
    capsys.readouterr()
    paper_tables.main(["--results", str(exp)])
    out = capsys.readouterr().out

    cells = _row(out, "condensenet_86_cifar10")
    (top1,) = _val_top1(exp / "condensenet_86_cifar10")
    assert cells[1] == "94.94 (5.06)"                            # CondenseNet-86 (G=C=4): 5.06 % error
    assert cells[2] == f"{top1:.2f} / {top1:.2f}" and cells[3] == "–"
    assert cells[4:] == ["1 / 300", "64 / 64", "short: 1 of 300 epochs (max_epoch 1)"]

    cells = _row(out, "cdnv2_110_cifar10")
    (top1,) = _val_top1(exp / "cdnv2_110_cifar10")
    assert cells[2] == f"{top1:.2f} / {top1:.2f}"
    assert cells[4:] == ["1 / 300", "32 / 64", "short: 1 of 300 epochs (max_epoch 1); global batch 32, not 64"]

    assert _row(out, "condensenet_50_cifar10")[2:] == ["–", "–", "– / 300", "– / 64", "missing"]
    assert _row(out, "cdnv2_a_imagenet")[5:] == ["– / 1024", "missing"]


def test_best_final_and_ema_come_from_every_validated_epoch(tmp_path, capsys):
    """A hand-written run of cdnv2_a_imagenet (an EMA recipe) validated at epochs 5, 10 and 15 of 350."""
    run = tmp_path / "cdnv2_a_imagenet"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"max_epoch": 350, "batch_size": 256, "grad_accum_steps": 4}))
    rows = [("1", "", ""), ("5", "10.5", "9.25"), ("10", "30.125", "31.5"), ("15", "20", "33.75"), ("16", "", "")]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "val_top1", "ema_val_top1"])
        w.writerows(rows)
    paper_tables.main(["--results", str(tmp_path)])
    cells = _row(capsys.readouterr().out, "cdnv2_a_imagenet")
    assert cells[1:] == ["64.40 (35.60)", "30.12 / 20.00", "33.75 / 33.75", "16 / 350", "1024 / 1024",
                         "short: 16 of 350 epochs"]
