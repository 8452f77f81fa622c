"""Malformed images: whatever the bytes, the intake answers with an RGB image or an
``InvalidImage`` naming the field, never another error; the API answers 200 or 400, never 500;
a fetched URL's image that breaks the rules ends its generation in ``error`` (InvalidImage).

The mutants are flips, truncations, insertions and extreme header values applied to real
JPEG, PNG, WebP and GIF files made here with Pillow (seeded: a failure names its case).
"""

from __future__ import annotations

import base64
import itertools
import random
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from reelforge.errors import InvalidImage
from reelforge.media.intake import load_image, source_size
from tests import hostile_images as hostile
from tests.pictures import textured
from tests.service import Api, running_api, running_workers, service_settings

FIELD = "first_frame_image"
MUTANTS_PER_SEED = 60
FUZZ_SECONDS = 10.0
STRUCT_ERROR_EXIF = bytes.fromhex(
    "4578696600004d4d002a00000008000201060002000000060000002601120003000000010006000000000000"
    "d92a6b657200"
)
"""An EXIF block (orientation 6) with an ASCII value under a numeric tag: re-serialising it,
as ``ImageOps.exif_transpose`` did, raised ``struct.error`` (a 500)."""


def _with_exif(image: Image.Image) -> bytes:
    exif = image.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    return hostile.encoded(image, "JPEG", exif=exif.tobytes())


def seeds() -> dict[str, bytes]:
    """Valid files of each kind the intake meets (GIF and WebP: refused by format)."""
    picture = textured(400, 320)
    palette = picture.convert("RGBA").convert("P")
    return {
        "jpeg": hostile.encoded(picture, "JPEG"),
        "jpeg-exif": _with_exif(picture),
        "jpeg-progressive": hostile.encoded(picture, "JPEG", progressive=True),
        "jpeg-grey": hostile.encoded(picture.convert("L"), "JPEG"),
        "jpeg-cmyk": hostile.encoded(picture.convert("CMYK"), "JPEG"),
        "png": hostile.encoded(picture, "PNG"),
        "png-palette-alpha": hostile.encoded(palette, "PNG"),
        "png-16-bit": hostile.encoded(picture.convert("I;16"), "PNG"),
        "png-1-bit": hostile.encoded(picture.convert("1"), "PNG"),
        "png-exif": hostile.encoded(picture, "PNG", exif=picture.getexif().tobytes()),
        "webp": hostile.encoded(picture, "WEBP"),
        "gif": hostile.encoded(picture, "GIF"),
    }


def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(len(data)) :]


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data))
    data[at:at] = rng.randbytes(rng.randint(1, 64))


def _extreme(data: bytearray, rng: random.Random) -> None:
    """An extreme 16- or 32-bit value in the first 400 bytes, where the headers are."""
    at = rng.randrange(min(len(data), 400) - 4)
    value = rng.choice([0, 1, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF])
    data[at : at + 4] = struct.pack(">I", value) if value > 0xFFFF else struct.pack(">HH", value, 0)


MUTATIONS: tuple[Callable[[bytearray, random.Random], None], ...] = (
    _flip,
    _truncate,
    _insert,
    _extreme,
)


def mutants(name: str, data: bytes, count: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(name)
    for index in range(count):
        mutant = bytearray(data)
        rng.choice(MUTATIONS)(mutant, rng)
        yield f"{name}#{index}", bytes(mutant)


NUMERIC_TAGS = (0x0100, 0x0101, 0x0103, 0x0106, 0x0112, 0x011A, 0x0128, 0x0213, 0xA002, 0x9207)


def exif_mutants(count: int) -> Iterator[tuple[str, bytes]]:
    """JPEGs whose EXIF entries (Make, Model, XResolution, Orientation...) have another
    numeric tag or another type than their value's: the old intake raised struct.error,
    TypeError or AttributeError on one in four."""
    picture, rng = textured(400, 320), random.Random("exif")
    exif = picture.getexif()
    exif.update({0x0112: 6, 0x010F: "Maker", 0x0110: "Model", 0x0213: 1})
    exif[0x011A] = IFDRational(72, 1)
    block = exif.tobytes()  # b"Exif\0\0", a TIFF header (byte order first), IFD0 from offset 14
    short = "<H" if block[6:8] == b"II" else ">H"
    (entries,) = struct.unpack_from(short, block, 14)
    for index in range(count):
        mutant = bytearray(block)
        entry = 16 + 12 * rng.randrange(entries)
        if rng.random() < 0.5:
            struct.pack_into(short, mutant, entry, rng.choice(NUMERIC_TAGS))
        else:
            struct.pack_into(short, mutant, entry + 2, rng.randrange(14))
        yield f"exif#{index}", hostile.encoded(picture, "JPEG", exif=bytes(mutant))


def answer(data: bytes) -> str:
    """'accepted' or 'refused'; any other outcome fails the test."""
    try:
        image = load_image(data, field=FIELD)
    except InvalidImage as exc:
        refusal = exc.message
    else:
        assert image.mode == "RGB"
        assert min(source_size(image)) > 300
        return "accepted"
    assert refusal.startswith(f"{FIELD}: ")
    return "refused"


def test_every_seed_but_gif_and_webp_is_accepted() -> None:
    outcomes = {name: answer(data) for name, data in seeds().items()}
    assert {name for name, outcome in outcomes.items() if outcome == "refused"} == {"gif", "webp"}


def test_mutants_are_accepted_or_refused_never_an_error() -> None:
    started, outcomes = time.monotonic(), {"accepted": 0, "refused": 0}
    cases = [mutants(name, data, MUTANTS_PER_SEED) for name, data in seeds().items()]
    for case, mutant in itertools.chain(exif_mutants(200), *cases):
        try:
            outcomes[answer(mutant)] += 1
        except Exception as exc:
            raise AssertionError(f"{case}: {exc!r}") from exc
    assert min(outcomes.values()) > 50, outcomes  # both outcomes are exercised
    assert time.monotonic() - started < FUZZ_SECONDS


def test_an_exif_block_that_cannot_be_reserialised_is_applied() -> None:
    data = hostile.encoded(textured(400, 320), "JPEG", exif=STRUCT_ERROR_EXIF)
    assert load_image(data, field=FIELD).size == (320, 400)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(service_settings(tmp_path_factory.mktemp("fuzz"))) as live:
        yield live


def test_the_api_answers_mutants_with_200_or_400(api: Api) -> None:
    cases = [
        ("struct-error-exif", hostile.encoded(textured(400, 320), "JPEG", exif=STRUCT_ERROR_EXIF))
    ]
    cases += [("claimed", hostile.claimed_jpeg()), ("scan-bomb", hostile.scan_bomb())]
    cases += list(exif_mutants(10))
    for name, data in seeds().items():
        cases += list(mutants(name, data, 3))
    statuses = set()
    for case, data in cases:
        body = {"model": "minimax/hailuo-02", "prompt": "x", FIELD: base64.b64encode(data).decode()}
        response = api.create(body)
        assert response.status_code in (200, 400), (case, response.text)
        if response.status_code == 400:
            assert response.json()["error"]["message"].startswith(f"{FIELD}: "), case
        statuses.add(response.status_code)
    assert statuses == {200, 400}


class _Files(ThreadingHTTPServer):
    files: dict[str, bytes]


class _Handler(BaseHTTPRequestHandler):
    server: _Files

    def do_GET(self) -> None:
        body = self.server.files[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def files() -> Iterator[_Files]:
    server = _Files(("127.0.0.1", 0), _Handler)
    server.files = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_fetched_image_that_breaks_the_limits_ends_in_invalid_image(
    tmp_path: Path, files: _Files
) -> None:
    files.files = {"/claimed.jpg": hostile.claimed_jpeg(), "/bomb.jpg": hostile.scan_bomb()}
    port = files.server_address[1]
    settings = service_settings(tmp_path, fetch_allow_private=True)
    with running_api(settings) as live, running_workers(settings):
        for path, expected in [
            ("/claimed.jpg", "fewer than the 237446 its 9000x9000 pixels need"),
            ("/bomb.jpg", "JPEG has more than 100 scans"),
        ]:
            body = {"model": "preview", "prompt": "x", FIELD: f"http://127.0.0.1:{port}{path}"}
            response = live.create(body)
            assert response.status_code == 200, response.text
            done = live.wait(response.json()["generation_id"], timeout=30)
            assert done["error"]["name"] == "InvalidImage", done
            assert expected in done["error"]["message"]
