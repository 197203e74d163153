"""Write the small COCO-format detection set of docs/detection.md's short run (datasets.synthetic.make_coco_set).

    python tools/make_coco_demo.py DEST [N_TRAIN] [N_VAL] [--seed 0] [--backgrounds ARCHIVE]

Real photos with drawn boxes and ellipses of 3 categories: the backgrounds are crops of the JPEGs in
``--backgrounds`` (a .tar.gz; default the ImageNet sample of ../shared/data, or $SHARED_DIR/data, where it
exists), else a smooth random texture.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from datasets.synthetic import make_coco_set  # noqa: E402

BACKGROUNDS = os.path.join(os.environ.get("SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared")),
                           "data", "imagenet_sample_s256.tar.gz")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", help="folder to write annotations/ and {train,val}2017/ into")
    ap.add_argument("n_train", nargs="?", type=int, default=16, help="training images (default 16)")
    ap.add_argument("n_val", nargs="?", type=int, default=8, help="validation images (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backgrounds", default=BACKGROUNDS,
                    help="a .tar.gz of JPEG photos to crop the backgrounds from (default: %(default)s; "
                         "a path that does not exist: random textures)")
    args = ap.parse_args(argv)
    out = make_coco_set(args.dest, args.n_train, args.n_val, args.seed, args.backgrounds)
    photos = "photos" if os.path.isfile(args.backgrounds) else "random textures"
    print(f"wrote a COCO-format set under {out} ({args.n_train} train, {args.n_val} val images on {photos})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
