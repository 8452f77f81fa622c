"""The reference's own example client (seed/000_cbcf6bb71ad7515b.txt, its Python block)
run against a live service. It is copied verbatim; the test changes only what a user of
the reference changes (base URL, key), the image URL's host (nothing here reaches the
internet, so the Mona Lisa is served from loopback) and the 10 s poll interval."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests
from PIL import Image

from tests.pictures import encoded, textured
from tests.service import TEST_KEY, Api, running_api, running_workers, service_settings
from tests.videos import mae

SEED_IMAGE_HOST = "https://s2-111386.kwimgs.com"
SEED_IMAGE_PATH = "/bs2/mmu-aiplatform-temp/kling/20240620/1.jpeg"

SEED_CLIENT = """\
import requests
import time

# Insert your AIML API Key instead of <YOUR_AIMLAPI_KEY>:
base_url = "https://api.aimlapi.com/v2"
api_key = "<YOUR_AIMLAPI_KEY>"

# Creating and sending a video generation task to the server
def generate_video():
    url = f"{base_url}/generate/video/minimax/generation"
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json"
    }

    data = {
        "model": "minimax/hailuo-02",
        "prompt": "Mona Lisa puts on glasses with her hands.",
        "first_frame_image": "https://s2-111386.kwimgs.com/bs2/mmu-aiplatform-temp/kling/20240620/1.jpeg"      
    }
 
    response = requests.post(url, json=data, headers=headers)
    
    if response.status_code >= 400:
        print(f"Error: {response.status_code} - {response.text}")
    else:
        response_data = response.json()
        return response_data
    

# Requesting the result of the task from the server using the generation_id
def get_video(gen_id):
    url = f"{base_url}/generate/video/minimax/generation"
    params = {
        "generation_id": gen_id,
    }
    
    headers = {
        "Authorization": f"Bearer {api_key}", 
        "Content-Type": "application/json"
        }

    response = requests.get(url, params=params, headers=headers)
    return response.json()


def main():
     # Running video generation and getting a task id
    gen_response = generate_video()
    print(gen_response)
    gen_id = gen_response.get("generation_id")
    print("Generation ID:  ", gen_id)

    # Trying to retrieve the video from the server every 10 sec
    if gen_id:
        start_time = time.time()

        timeout = 1000
        while time.time() - start_time < timeout:
            response_data = get_video(gen_id)

            if response_data is None:
                print("Error: No response from API")
                break
        
            status = response_data.get("status")
            print("Status:", status)

            if status == "waiting" or status == "active" or  status == "queued" or status == "generating":
                print("Still waiting... Checking again in 10 seconds.")
                time.sleep(10)
            else:
                print("Processing complete:/n", response_data)
                return response_data
   
        print("Timeout reached. Stopping.")
        return None     


if __name__ == "__main__":
    main()
"""  # noqa: E501, W291, W293


@dataclass
class ImageSite:
    """A loopback HTTP server answering ``SEED_IMAGE_PATH`` with a JPEG."""

    jpeg: bytes
    requests_seen: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{SEED_IMAGE_PATH}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests_seen.append(self.path)
                if self.path != SEED_IMAGE_PATH:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(site.jpeg)))
                self.end_headers()
                self.wfile.write(site.jpeg)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads ``requests_seen``."""

        return Handler


@pytest.fixture
def mona_lisa() -> Image.Image:
    """A stand-in for the seed's picture, at the Mona Lisa's 1000x1487."""
    return textured(1000, 1487, seed=7)


@pytest.fixture
def image_site(mona_lisa: Image.Image) -> Iterator[ImageSite]:
    site = ImageSite(encoded(mona_lisa, "JPEG", quality=95))
    site.server = ThreadingHTTPServer(("127.0.0.1", 0), site.handler())
    thread = threading.Thread(target=site.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.server.shutdown()
        site.server.server_close()
        thread.join(10)


@pytest.fixture
def fetching_service(tmp_path: Path) -> Iterator[Api]:
    """The API and one worker whose image fetches may reach loopback."""
    settings = service_settings(tmp_path, fetch_allow_private=True)
    with running_api(settings) as live, running_workers(settings):
        yield live


def edited(source: str, replacements: dict[str, str]) -> str:
    """``source`` with each key replaced by its value; each key must occur exactly once."""
    for old, new in replacements.items():
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def load_client(service: Api, image_url: str) -> Callable[[], Any]:
    """The seed client's ``main``, pointed at ``service``."""
    source = edited(
        SEED_CLIENT,
        {
            'base_url = "https://api.aimlapi.com/v2"': f'base_url = "{service.base_url}/v2"',
            'api_key = "<YOUR_AIMLAPI_KEY>"': f'api_key = "{TEST_KEY}"',
            f'"{SEED_IMAGE_HOST}{SEED_IMAGE_PATH}"': f'"{image_url}"',
            "time.sleep(10)": "time.sleep(0.2)",
        },
    )
    namespace: dict[str, Any] = {"__name__": "seed_client"}
    exec(compile(source, "seed_client.py", "exec"), namespace)
    main: Callable[[], Any] = namespace["main"]
    return main


def test_the_seed_client_gets_a_playable_mona_lisa_video(
    fetching_service: Api, image_site: ImageSite, mona_lisa: Image.Image, tmp_path: Path
) -> None:
    answer = load_client(fetching_service, image_site.url)()

    assert isinstance(answer, dict)
    assert answer["status"] == "completed", answer
    assert answer["id"]
    assert image_site.requests_seen == [SEED_IMAGE_PATH]
    download = requests.get(answer["video"]["url"], timeout=30)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "video/mp4"
    video = tmp_path / "mona-lisa.mp4"
    video.write_bytes(download.content)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (768, 1142)
        assert (stream.codec_context.name, str(stream.codec_context.pix_fmt)) == ("h264", "yuv420p")
        assert stream.frames == 150
        first = next(container.decode(stream)).to_ndarray(format="rgb24")
    expected = mona_lisa.resize((768, 1142), Image.Resampling.LANCZOS)
    assert mae(np.asarray(first, np.uint8), expected) < 4
