"""commands/detection.py's drawing: detections drawn into a PNG, written atomically."""
import numpy as np
import pytest
import torch
from PIL import Image

from commands.detection import draw_detections
from utils.errors import ConfigError


def test_boxes_are_drawn_in_the_class_colour_and_low_scores_left_out(tmp_path):
    image = torch.zeros(3, 64, 80)                       # black float image in [0, 1]
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [60.0, 5.0, 75.0, 30.0]])
    path = tmp_path / "det.png"
    out = draw_detections(image, boxes, torch.tensor([1, 2]), torch.tensor([0.9, 0.1]), ["cat", "dog"], str(path),
                          score_threshold=0.5)
    assert out == str(path) and [p.name for p in tmp_path.iterdir()] == ["det.png"]
    a = np.asarray(Image.open(path))
    assert a.shape == (64, 80, 3)
    assert tuple(a[40, 10]) == (31, 119, 180)            # left edge of box 1 in the first class colour
    assert a[15:30, 60:76].max() == 0                    # the 0.1-score box is not drawn
    assert a[12:20, 10:40].max() > 0                     # the label text above box 1


def test_unwritable_path_is_one_sentence_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError):
        draw_detections(np.zeros((8, 8, 3), np.uint8), [], [], [], [], str(blocker / "a.png"))
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
