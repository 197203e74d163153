"""Print the COCO detection table of docs/detection.md: published mAPs beside this project's backbone FLOPs.

    python tools/detection_table.py

FLOPs per image at 224 x 224 with each family's counting rule (``graphs.detection.flops``): the whole
classification network (the figure the CondenseNetV2 README quotes beside each backbone) and the
detection body (the stages up to stride 32 that feed the FPN). mAPs: CondenseNetV2 README (COCO val
2017 box AP, mmdetection 1x); this project has not trained these detectors on COCO.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from graphs.detection.flops import table_rows  # noqa: E402


def main():
    print("| detector | backbone | FLOPs rule | network FLOPs (ours, 224²) | body FLOPs (ours, 224²) "
          "| published COCO mAP |")
    print("|---|---|---|---|---|---|")
    for row in table_rows():
        print("| " + " | ".join(f"`{c}`" if i == 1 else c for i, c in enumerate(row)) + " |")


if __name__ == "__main__":
    main()
