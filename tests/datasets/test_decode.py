"""datasets.decode: real odd image files (written here with Pillow, numpy, or byte by byte where Pillow
cannot write the type) read the way they look, and every path that reads images uses it."""
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features
from torchvision.transforms.functional import pil_to_tensor

from conftest import ROOT
from datasets import build_loaders, calibration_loader
from datasets.folder import load_folder
from datasets.loader import FolderDataset
from datasets.decode import DEFAULT_MAX_PIXELS, decode_image
from utils.errors import DataError
from tests.conftest import tiny_settings

RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)
# 16-bit samples and their 8-bit values by hand: the high byte (v >> 8), where convert("RGB") gives 255
WORDS = [0, 255, 256, 1000, 30000, 65535]
BYTES = [0, 0, 1, 3, 117, 255]


def pixels(img):
    return np.asarray(img).astype(int)


def upright():
    """A 40 x 60 (W x H) portrait: red, green / blue, yellow quadrants."""
    a = np.zeros((60, 40, 3), np.uint8)
    a[:30, :20], a[:30, 20:], a[30:, :20], a[30:, 20:] = RED, GREEN, BLUE, YELLOW
    return Image.fromarray(a)


def quadrant_colours(img):
    """The colours at the centres of the four quadrants (top-left, top-right, bottom-left, bottom-right)."""
    w, h = img.size
    return [img.getpixel((x, y)) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4)]


def close(got, want, tol=6):
    return all(abs(int(g) - int(w)) <= tol for g, w in zip(got, want))


# how the camera stored the picture, for the EXIF orientation that turns it upright again
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def exif_jpeg(path, orientation=6):
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright().transpose(STORED[orientation]).save(path, quality=95, exif=exif.tobytes())
    return str(path)


def png16(arr, path):
    """A 16-bit PNG written byte by byte (Pillow writes 16-bit grey only): arr (H, W, C) uint16, C 1 or 3."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                           + chunk(b"IEND", b""))
    return str(path)


def tiff16_rgb(arr, path):
    """An uncompressed little-endian 16-bit RGB TIFF written byte by byte: arr (H, W, 3) uint16."""
    h, w, _ = arr.shape
    data = arr.astype("<u2").tobytes()
    bits_at, ifd_at = 8 + len(data), 8 + len(data) + 6
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bits_at), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, 8), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHIHH" if kind == 3 and n == 1 else "<HHII", tag, kind, n, value, *([0] if kind == 3 and
                    n == 1 else [])) for tag, kind, n, value in tags) + struct.pack("<I", 0)
    Path(path).write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + data + struct.pack("<3H", 16, 16, 16) + ifd)
    return str(path)


# ------------------------------------------------------------------ orientation
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_gives_the_upright_picture(tmp_path, orientation):
    path = exif_jpeg(tmp_path / "phone.jpg", orientation)
    with Image.open(path) as raw:              # the file really is stored turned, with the tag
        assert raw.getexif()[0x0112] == orientation
        stored_size = raw.size
    img = decode_image(path)
    assert img.mode == "RGB" and img.size == (40, 60)
    assert stored_size == ((60, 40) if orientation in (6, 8) else (40, 60))
    for got, want in zip(quadrant_colours(img), [RED, GREEN, BLUE, YELLOW]):
        assert close(got, want), (got, want)
    # annotations drawn on the stored pixels can ask for them
    assert decode_image(path, exif_orientation=False).size == stored_size


# ------------------------------------------------------------------ 16 bits
def test_16bit_grey_png_and_tiff_are_scaled_not_clipped(tmp_path):
    words = np.array([WORDS], np.uint16)
    for suffix in ("png", "tif"):
        path = tmp_path / f"grey16.{suffix}"
        Image.fromarray(words).save(path)
        with Image.open(path) as raw:
            assert raw.mode == "I;16"                          # a real 16-bit file
            assert raw.convert("RGB").getpixel((3, 0)) == WHITE  # what plain Pillow makes of 1000
        got = pixels(decode_image(path))
        assert got.shape == (1, 6, 3)
        assert got[0, :, 0].tolist() == BYTES and (got[..., 0] == got[..., 2]).all()


def test_16bit_rgb_png_and_tiff_keep_the_high_byte(tmp_path):
    words = np.array([[WORDS[:3], WORDS[3:]]], np.uint16)     # two pixels of 16-bit R, G, B
    want = [[BYTES[:3], BYTES[3:]]]
    for path in (png16(words, tmp_path / "rgb16.png"), tiff16_rgb(words, tmp_path / "rgb16.tif")):
        assert pixels(decode_image(path)).tolist() == want, path


def test_16bit_grey_written_by_hand_and_16bit_pgm(tmp_path):
    words = np.array([WORDS], np.uint16)
    assert pixels(decode_image(png16(words[..., None], tmp_path / "g.png")))[0, :, 1].tolist() == BYTES
    pgm = tmp_path / "g.pgm"                                    # Pillow opens 16-bit PGM as mode I
    pgm.write_bytes(b"P5\n6 1\n65535\n" + words.astype(">u2").tobytes())
    with Image.open(pgm) as raw:
        assert raw.mode == "I"
    assert pixels(decode_image(pgm))[0, :, 0].tolist() == BYTES


def test_float_tiff_is_read_as_0_to_1(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)).save(path)
    assert pixels(decode_image(path))[0, :, 0].tolist() == [0, 128, 255, 255, 0]


# ------------------------------------------------------------------ colour modes, transparency
@pytest.mark.parametrize("transparency", [1, b"\xff\x00"], ids=["index", "bytes"])
def test_palette_with_transparency_is_composited_onto_white(tmp_path, transparency):
    img = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
    img.putpalette(list(RED + GREEN + BLUE))
    path = tmp_path / "p.png"
    img.save(path, transparency=transparency)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # Pillow's "should be converted to RGBA" warning
        got = decode_image(path)
    # index 1 (green) is transparent: white; plain convert("RGB") shows the hidden green
    assert [got.getpixel((x, 0)) for x in range(3)] == [RED, WHITE, BLUE]


def test_alpha_and_grey_alpha(tmp_path):
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = pixels(decode_image(tmp_path / "a.png"))[0]
    assert got[0].tolist() == [10, 20, 30] and got[1].tolist() == list(WHITE)
    assert close(got[2], [127, 127, 127], 1)                  # black at half alpha over white: 255 * 127/255
    la = np.array([[[100, 255], [100, 0]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert pixels(decode_image(tmp_path / "la.png"))[0].tolist() == [[100] * 3, list(WHITE)]
    Image.fromarray(np.array([[7, 200]], np.uint8), "L").save(tmp_path / "l.png")
    assert pixels(decode_image(tmp_path / "l.png"))[0].tolist() == [[7] * 3, [200] * 3]


def test_cmyk_jpeg(tmp_path):
    cmyk = np.zeros((16, 48, 4), np.uint8)
    cmyk[:, 16:32] = (0, 255, 255, 0)        # no cyan, full magenta and yellow: red
    cmyk[:, 32:] = (0, 0, 0, 255)            # full black
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as raw:
        assert raw.mode == "CMYK"
    img = decode_image(tmp_path / "c.jpg")
    for x, want in ((8, WHITE), (24, RED), (40, (0, 0, 0))):
        assert close(img.getpixel((x, 8)), want, 8), (x, img.getpixel((x, 8)))


# ------------------------------------------------------------------ animation
def _animations():
    out = [("gif", {}), ("png", {})]                           # GIF and APNG
    if features.check("webp"):
        out.append(("webp", {"lossless": True}))
    return out


@pytest.mark.parametrize("suffix,options", _animations(), ids=lambda v: v if isinstance(v, str) else "")
def test_animated_files_give_their_first_frame(tmp_path, suffix, options):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, GREEN)]
    path = tmp_path / f"anim.{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    img = decode_image(path)
    assert img.size == (8, 8) and close(img.getpixel((4, 4)), RED, 2)


# ------------------------------------------------------------------ refusals
def test_too_many_pixels_names_size_and_setting(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1000, 800), RED).save(path)
    with pytest.raises(DataError) as err:
        decode_image(path, max_pixels=799_999)
    message = str(err.value)
    assert "1000 x 800 pixels (0.8 megapixels)" in message and "max_image_pixels = 799999" in message
    assert "big.png" in message and "corrupt" not in message and "\n" not in message
    assert decode_image(path, max_pixels=800_000).size == (1000, 800)
    # the size comes from the header: refused before the pixels are decoded (this file has too few)
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="corrupt"):
        decode_image(cut)
    with pytest.raises(DataError, match="1000 x 800"):
        decode_image(cut, max_pixels=10)


def test_own_limit_replaces_pillows_and_leaves_it_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80), RED).save(path)
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS                # Pillow's own default
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)       # Pillow alone would refuse (> 2 x 1000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert decode_image(path, max_pixels=None).size == (100, 80)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_truncated_and_missing_files(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.jpg .*corrupt"):
        decode_image(cut)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match=r"text\.png"):
        decode_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="does not exist"):
        decode_image(tmp_path / "missing.png")


# ------------------------------------------------------------------ every path uses it
def _folder_tree(root, big=False):
    for split in ("train", "val"):
        for cls, colour in (("red", RED), ("blue", BLUE)):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (24, 24), colour).save(d / f"{i}.png")
    if big:
        Image.new("RGB", (300, 200), RED).save(root / "train" / "red" / "2big.png")
    return root


def _cfg(root, **kw):
    return tiny_settings(**{**dict(dataset="folder", data_root=str(root), batch_size=2, input_size=16, crop_pct=1.0,
                                   seed=0, num_workers=0), **kw})


def test_training_folder_loader_reads_phone_photos_upright(tmp_path):
    path = exif_jpeg(tmp_path / "phone.jpg", 6)
    ds = FolderDataset([(path, 0)], pil_to_tensor)
    x, target = ds[(0, None)]
    assert x.shape == (3, 60, 40) and target == 0
    for got, want in zip(quadrant_colours(Image.fromarray(x.permute(1, 2, 0).numpy())), [RED, GREEN, BLUE, YELLOW]):
        assert close(got, want)


@pytest.mark.parametrize("workers", [0, 1])
def test_pixel_limit_reaches_the_loader_workers(tmp_path, workers):
    root = _folder_tree(tmp_path / "data", big=True)
    train, _ = build_loaders(_cfg(root, max_image_pixels=50_000, num_workers=workers), None, "cpu")
    with pytest.raises(DataError, match=r"2big\.png is 300 x 200 .*max_image_pixels = 50000.*bad_images"):
        list(train)
    train, _ = build_loaders(_cfg(root, max_image_pixels=50_000, num_workers=workers, bad_images="skip"),
                             None, "cpu")
    assert sum(len(y) for _, y in train) == 4 and train.skipped_images == 1
    # the calibration images (int8 export) are decoded under the same setting
    calib = calibration_loader(train, build_loaders(_cfg(root, max_image_pixels=50_000), None, "cpu")[1], 5)
    assert sum(len(y) for _, y in calib) == 4 and calib.skipped_images == 1
    train, _ = build_loaders(_cfg(root, max_image_pixels=None, num_workers=workers), None, "cpu")
    assert sum(len(y) for _, y in train) == 5


def test_folder_scan_judges_files_with_the_decoder(tmp_path):
    root = _folder_tree(tmp_path / "data")
    for p in (root / "train" / "blue").iterdir():
        p.unlink()
    Image.new("RGB", (300, 200), BLUE).save(root / "train" / "blue" / "big.png")
    with pytest.raises(DataError, match=r"blue holds no readable image.*300 x 200.*max_image_pixels"):
        load_folder(root, max_pixels=50_000)
    assert len(load_folder(root, max_pixels=None)[0]) == 3


# ------------------------------------------------------------------ predict through main.py
def test_predict_skips_or_stops_at_a_bad_file(tmp_path, tiny_config):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("a.png", RED), ("c.png", BLUE)):
        Image.new("RGB", (40, 30), colour).save(folder / name)
    exif_jpeg(folder / "d.jpg", 6)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 half a jpeg")
    config = tiny_config("p", synthetic_shape=[3, 32, 32], model_args={"stages": [1, 1], "growth": [4, 4]})

    def predict(policy):
        return subprocess.run([sys.executable, str(ROOT / "main.py"), config, "--mode", "predict",
                               "--images", str(folder), "--set", f"bad_images={policy}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    skip = predict("skip")
    assert skip.returncode == 0, skip.stderr[-2000:]
    lines = skip.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(folder / n) for n in ("a.png", "c.png", "d.jpg")]
    assert all(len(line.split(": ", 1)[1].split(", ")) == 4 for line in lines)    # 4 classes
    about_b = [line for line in skip.stderr.splitlines() if "b.jpg" in line]
    assert len(about_b) == 1 and "skip" in about_b[0]
    stop = predict("error")
    assert stop.returncode == 2 and stop.stdout.strip() == ""
    assert "Traceback" not in stop.stderr
    errors = [line for line in stop.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b.jpg" in errors[0] and "bad_images" in errors[0]
