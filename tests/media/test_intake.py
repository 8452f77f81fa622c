from __future__ import annotations

import pytest
from PIL import Image

from reelforge.errors import InvalidImage
from reelforge.media.intake import load_image, source_size
from reelforge.media.sizing import output_size
from reelforge.request import Resolution
from tests.pictures import encoded, textured


def test_png_and_jpeg_are_decoded_to_rgb() -> None:
    assert load_image(encoded(textured(640, 480)), field="f").size == (640, 480)
    jpeg = load_image(encoded(textured(480, 640), "JPEG"), field="f")
    assert (jpeg.size, jpeg.mode) == ((480, 640), "RGB")


def test_palette_png_with_alpha_becomes_rgb() -> None:
    image = textured(400, 400).convert("RGBA").convert("P")
    assert load_image(encoded(image), field="f").mode == "RGB"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP", "TIFF"])
def test_other_formats_are_refused_by_content(fmt: str) -> None:
    with pytest.raises(InvalidImage, match=r"^first_frame_image: image is not a JPG/JPEG or PNG"):
        load_image(encoded(textured(640, 480), fmt), field="first_frame_image")


def test_text_is_refused() -> None:
    with pytest.raises(InvalidImage, match="not a JPG/JPEG or PNG"):
        load_image(b"<html>definitely an image</html>", field="f")


def test_png_header_with_garbage_is_refused() -> None:
    data = encoded(textured(640, 480))
    with pytest.raises(InvalidImage, match="could not be decoded"):
        load_image(data[:200], field="f")


def test_format_is_read_from_content_not_name() -> None:
    # The same PNG bytes are accepted whatever a file would have been called.
    assert load_image(encoded(textured(640, 480), "PNG"), field="f.jpg").size == (640, 480)


def test_over_20_mb_is_refused_before_decoding() -> None:
    data = encoded(textured(640, 480)) + b"\0" * (20 * 1024 * 1024)
    with pytest.raises(InvalidImage, match=r"bytes; the limit is 20971520 bytes"):
        load_image(data, field="last_image_url")


@pytest.mark.parametrize(
    ("size", "accepted"),
    [((400, 1000), False), ((401, 1000), True), ((1000, 400), False), ((999, 400), True)],
)
def test_ratio_must_be_strictly_between_2_5_and_5_2(size: tuple[int, int], accepted: bool) -> None:
    data = encoded(Image.new("RGB", size, (90, 120, 150)))
    if accepted:
        assert load_image(data, field="f").size == size
    else:
        with pytest.raises(InvalidImage, match=r"ratio must be strictly between 2:5 and 5:2"):
            load_image(data, field="f")


@pytest.mark.parametrize(("size", "accepted"), [((300, 500), False), ((301, 500), True)])
def test_shorter_side_must_exceed_300(size: tuple[int, int], accepted: bool) -> None:
    data = encoded(Image.new("RGB", size, (90, 120, 150)), "JPEG")
    if accepted:
        assert load_image(data, field="f").size == size
    else:
        with pytest.raises(
            InvalidImage, match=r"300x500; its shorter side must be greater than 300"
        ):
            load_image(data, field="f")


@pytest.mark.parametrize("pixels_over", [1.2, 2.5])
def test_decompression_bomb_limit_is_an_error(
    monkeypatch: pytest.MonkeyPatch, pixels_over: float
) -> None:
    # Lower Pillow's limit so a modest image crosses it: first the warning zone, then the error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(640 * 480 / pixels_over))
    with pytest.raises(InvalidImage, match="too many pixels"):
        load_image(encoded(textured(640, 480)), field="f")


def test_exif_orientation_is_applied_before_the_checks() -> None:
    image = textured(640, 400)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encoded(image, "JPEG", exif=exif.tobytes())
    oriented = load_image(data, field="f")
    assert oriented.size == (400, 640)


def test_exif_orientation_can_make_an_image_fail() -> None:
    image = Image.new("RGB", (1000, 320), (90, 120, 150))  # fine as stored; 320x1000 displayed
    exif = image.getexif()
    exif[0x0112] = 8
    with pytest.raises(InvalidImage, match="320x1000"):
        load_image(encoded(image, "JPEG", exif=exif.tobytes()), field="f")


def test_a_large_jpeg_is_decoded_at_a_scale_that_keeps_2700_px_and_its_own_size() -> None:
    """5405x5400 decodes at 1/2 (2703x2700); the video's size still comes from the file's: a
    1080P video of the reduced pixels would be 1082x1080, of the file 1080x1080."""
    image = load_image(encoded(Image.new("RGB", (5405, 5400), (90, 120, 150)), "JPEG"), field="f")
    assert (image.size, source_size(image)) == ((2703, 2700), (5405, 5400))
    assert output_size(Resolution.P1080, image.size) == (1082, 1080)
    assert output_size(Resolution.P1080, source_size(image)) == (1080, 1080)


def test_a_large_png_is_resized_to_a_shorter_side_of_2700_px() -> None:
    image = load_image(encoded(Image.new("L", (8200, 5500), 90)), field="f")
    assert (image.size, image.mode, source_size(image)) == ((4025, 2700), "RGB", (8200, 5500))


def test_a_png_exif_orientation_is_applied() -> None:
    image = textured(640, 400)
    exif = image.getexif()
    exif[0x0112] = 8
    oriented = load_image(encoded(image, exif=exif.tobytes()), field="f")
    assert (oriented.size, source_size(oriented)) == ((400, 640), (400, 640))


def test_a_jpeg_without_data_for_its_pixels_is_refused() -> None:
    data = encoded(Image.new("RGB", (800, 600), (90, 120, 150)), "JPEG")
    end = data.rfind(b"\xff\xd9")
    with pytest.raises(InvalidImage, match=r"^f: JPEG has 0 bytes of image data, fewer than the"):
        load_image(data[: data.rfind(b"\xff\xda") + 14] + data[end:], field="f")


def test_a_decoder_failure_of_any_kind_is_invalid_image() -> None:
    data = encoded(textured(640, 480), "JPEG")
    with pytest.raises(InvalidImage, match=r"^f: image could not be decoded"):
        load_image(data[:-600], field="f")
