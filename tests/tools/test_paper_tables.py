"""tools/paper_tables.py: the papers' tables of docs/papers.md and the config folders' READMEs are current, and
--results puts each paper row's published top-1 beside what its run measured."""
import csv
import json

import pytest

from conftest import ROOT
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
    configs = ROOT / "configs"
    assert main.main([str(configs / "condensenet" / "condensenet_86_cifar10.json"), "--set", *common]) == 0
    assert main.main([str(configs / "cdnv2" / "cdnv2_110_cifar10.json"), "--set", *common, "batch_size=32"]) == 0
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


def test_config_folder_readmes_are_current_and_cover_every_config():
    configs = ROOT / "configs"
    # the headline run stays on top, beside the schema of every config
    assert sorted(p.name for p in configs.glob("*.json")) == ["cdnv2_exp_0.json", "schema.json"]
    assert {p.parent.name for p in configs.rglob("*.json")} - {"configs"} == {f for _, f in paper_tables.FOLDERS}
    for title, folder in paper_tables.FOLDERS:
        text = (configs / folder / "README.md").read_text()
        assert text == paper_tables.config_readme(title, folder), \
            f"regenerate configs/{folder}/README.md with: python tools/paper_tables.py --configs"
        for path in (configs / folder).glob("*.json"):
            assert f"| [`{path.name}`]({path.name}) |" in text


def test_config_rows_name_the_recipe_and_the_published_figure():
    """Rows checked against the official READMEs: CondenseNet-86 (G=C=4) 65.8M / 0.52M, 5.06 % CIFAR-10 error,
    the official script's batch 64 for 300 epochs; ReXNet-1.0's 4 x 128 images, 400 epochs; Faster R-CNN with
    CondenseNetV2-A 23.5 COCO mAP (mmdetection 1x: 12 epochs, batch 16)."""
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for _, folder in paper_tables.FOLDERS
            for line in (ROOT / "configs" / folder / "README.md").read_text().splitlines() if line.startswith("| [")}
    assert rows["[`condensenet_86_cifar10.json`](condensenet_86_cifar10.json)"] == \
        ["`condensenet_86`", "`cifar10`", "300", "64", "top-1 94.94 %, 65.8M / 0.52M"]
    assert rows["[`rexnet_1_0_imagenet.json`](rexnet_1_0_imagenet.json)"][1:4] == ["`imagenet`", "400", "512"]
    assert rows["[`fasterrcnn_cdnv2_a_coco.json`](fasterrcnn_cdnv2_a_coco.json)"][1:] == \
        ["`coco`", "12", "16", "COCO mAP 23.5"]
    assert rows["[`condensenet_86_cifar100.json`](condensenet_86_cifar100.json)"][-1] == "–"   # no CIFAR-100 figure


@pytest.mark.slow
def test_docs_papers_tables_are_current():
    """docs/papers.md holds what the tool prints (every row's model built and counted: about 40 s)."""
    text = (ROOT / "docs" / "papers.md").read_text()
    begin, finish = paper_tables.MARKERS
    block = text[text.index(begin) + len(begin):text.index(finish)].strip()
    assert block == paper_tables.papers_markdown(), "regenerate it with: python tools/paper_tables.py --write"
    # one row checked against the official README by hand: CondenseNet-86 (G=C=4) on CIFAR-10
    assert "| `condensenet_86_cifar10` | `condensenet_86` | 94.94 | 65.8M / 0.52M | 65.82M / 0.5202M |" in block
