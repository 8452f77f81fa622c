"""The guarded image fetch against real servers on loopback (nothing leaves 127.0.0.0/8).

Refused requests are checked two ways: by their message, and by a canary that listens on
127.0.0.1, 127.0.0.2 (and ::1) without accepting, so any connection that reached it is
still waiting in its backlog.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from reelforge.errors import ImageFetchFailed, InvalidImage
from reelforge.media import fetch
from reelforge.media.fetch import FetchPolicy, fetch_image, fetch_image_bytes, is_public_address
from tests.canary import Canary, open_canary
from tests.pictures import encoded, textured

FIELD = "first_frame_image"
Route = Callable[["Handler"], None]


class Site(ThreadingHTTPServer):
    """An HTTP(S) server on 127.0.0.1 whose paths answer as each test sets them."""

    daemon_threads = False  # server_close() joins every handler thread

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Route] = {"/image.png": send(200, PNG, "image/png")}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.stop = threading.Event()
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def policy(self, **overrides: Any) -> FetchPolicy:
        """A policy allowing this site (127.0.0.1/32 on its port) and nothing else private."""
        only_this_site = FetchPolicy(
            allowed_networks=(ip_network("127.0.0.1/32"),),
            allowed_ports=frozenset({self.port}),
            deadline_seconds=5.0,
        )
        return dataclasses.replace(only_this_site, **overrides)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: Site

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers.items())))
        route = self.server.routes.get(self.path, send(404, b"not here", "text/plain"))
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``Site.seen`` instead."""


def send(status: int, body: bytes, content_type: str, *headers: tuple[str, str]) -> Route:
    def route(handler: Handler) -> None:
        handler.send_response(status)
        for name, value in (("Content-Type", content_type), *headers):
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def redirect(location: str, *headers: tuple[str, str]) -> Route:
    return send(302, b"", "text/plain", ("Location", location), *headers)


def endless(
    chunk: bytes, interval: float, *headers: tuple[str, str], chunked: bool = False
) -> Route:
    """Send ``chunk`` every ``interval`` seconds until the client hangs up or the test ends."""

    def route(handler: Handler) -> None:
        handler.send_response(200)
        for name, value in (("Content-Type", "image/png"), *headers):
            handler.send_header(name, value)
        handler.end_headers()
        framed = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
        while not handler.server.stop.wait(interval):
            handler.wfile.write(framed)
            handler.wfile.flush()

    return route


def silent(handler: Handler) -> None:
    handler.server.stop.wait(10)


PNG = encoded(textured(400, 320))


@pytest.fixture
def site() -> Iterator[Site]:
    yield from _serving(Site())


def _serving(server: Site) -> Iterator[Site]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def canary() -> Iterator[Canary]:
    yield from open_canary()


def resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> fetch.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test table")
        return table[host]

    return resolve


# --- fetching what the policy allows -------------------------------------------------


def test_png_is_fetched_from_an_allowed_server(site: Site) -> None:
    url = f"http://127.0.0.1:{site.port}/image.png"
    assert fetch_image_bytes(url, field=FIELD, policy=site.policy()) == PNG
    image = fetch_image(url, field=FIELD, policy=site.policy())
    assert (image.size, image.mode) == ((400, 320), "RGB")
    private = FetchPolicy(allow_private=True, deadline_seconds=5.0)
    assert fetch_image_bytes(url, field=FIELD, policy=private) == PNG


def test_connection_goes_to_the_checked_address_with_the_hostname_kept(site: Site) -> None:
    calls: list[str] = []
    names = resolver({"images.test": ["127.0.0.1"]}, calls)
    url = f"http://images.test:{site.port}/image.png"
    assert fetch_image_bytes(url, field=FIELD, policy=site.policy(), resolver=names) == PNG
    assert calls == ["images.test"]
    assert site.seen[0][1]["Host"] == f"images.test:{site.port}"


def test_redirects_are_followed_within_the_limit(site: Site) -> None:
    site.routes["/two"] = redirect("/one")
    site.routes["/one"] = redirect(f"http://127.0.0.1:{site.port}/image.png")
    url = f"http://127.0.0.1:{site.port}/two"
    assert fetch_image_bytes(url, field=FIELD, policy=site.policy(max_redirects=2)) == PNG
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: more than 1 redirects$"):
        fetch_image_bytes(url, field=FIELD, policy=site.policy(max_redirects=1))


def test_no_cookie_or_credential_is_sent_on(site: Site) -> None:
    site.routes["/login"] = redirect("/image.png", ("Set-Cookie", "session=secret; Path=/"))
    fetch_image_bytes(f"http://127.0.0.1:{site.port}/login", field=FIELD, policy=site.policy())
    sent = {name.lower() for _, headers in site.seen for name in headers}
    assert sent.isdisjoint({"cookie", "authorization", "proxy-authorization"})


def test_environment_proxies_are_ignored(
    site: Site, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.2:{canary.port}")
    url = f"http://127.0.0.1:{site.port}/image.png"
    assert fetch_image_bytes(url, field=FIELD, policy=site.policy()) == PNG
    assert canary.connections() == 0


# --- refusing addresses, schemes and ports before connecting ----------------------------


def test_canary_sees_a_connection_the_policy_allows(canary: Canary) -> None:
    trusting = FetchPolicy(allow_private=True, deadline_seconds=0.3)
    with pytest.raises(ImageFetchFailed, match=r"within the deadline of 0\.3 s$"):
        fetch_image_bytes(f"http://127.0.0.2:{canary.port}/", field=FIELD, policy=trusting)
    assert canary.connections() == 1


NOT_PUBLIC = [
    ("http://127.0.0.1:{port}/", "host 127.0.0.1 is not allowed$"),
    ("http://localhost:{port}/", r"host localhost is not allowed$"),
    ("http://0x7f000002:{port}/", "host 0x7f000002 is not allowed$"),
    ("http://2130706434:{port}/", "host 2130706434 is not allowed$"),
    ("http://017700000002:{port}/", "host 017700000002 is not allowed$"),
    ("http://127.1:{port}/", "host 127.1 is not allowed$"),
    ("http://0.0.0.0:{port}/", "host 0.0.0.0 is not allowed$"),
    ("http://[::ffff:127.0.0.2]:{port}/", "host ::ffff:127.0.0.2 is not allowed$"),
    ("http://[::1]:{port}/", "host ::1 is not allowed$"),
    ("https://127.0.0.2:{port}/", "host 127.0.0.2 is not allowed$"),
    ("ftp://127.0.0.2:{port}/x.png", "URL scheme must be http or https, not 'ftp'"),
    ("file:///etc/passwd", "URL scheme must be http or https, not 'file'"),
    ("/image.png", "URL scheme must be http or https, not ''"),
    ("http://user:pw@127.0.0.2:{port}/", r"credentials \(user:password@\) are not allowed"),
    ("http://127.0.0.2:{port}:1/", "is not valid"),
]


@pytest.mark.parametrize(("template", "reason"), NOT_PUBLIC)
def test_non_public_targets_are_refused_before_connecting(
    canary: Canary, template: str, reason: str
) -> None:
    policy = FetchPolicy(allowed_ports=frozenset({80, 443, canary.port}), deadline_seconds=2.0)
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: .*{reason}"):
        fetch_image_bytes(template.format(port=canary.port), field=FIELD, policy=policy)
    assert canary.connections() == 0


def test_default_policy_refuses_other_ports_before_resolving(canary: Canary) -> None:
    calls: list[str] = []
    names = resolver({"public.test": ["93.184.216.34"]}, calls)
    for url, host, port in [
        ("http://public.test:8080/a.png", "public.test", 8080),
        (f"http://127.0.0.2:{canary.port}/", "127.0.0.2", canary.port),
    ]:
        match = f"^{FIELD}: port {port} of host {host} is not allowed$"
        with pytest.raises(ImageFetchFailed, match=match):
            fetch_image_bytes(url, field=FIELD, policy=FetchPolicy(), resolver=names)
    assert calls == []
    assert canary.connections() == 0


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["93.184.216.34", "127.0.0.2"], "host mixed.test is not allowed$"),
        (["169.254.169.254"], "host mixed.test is not allowed$"),
        (["fd00:ec2::254"], "host mixed.test is not allowed$"),
        (["2002:7f00:2::1"], "host mixed.test is not allowed$"),
        (["127.0.0.2.example"], "host mixed.test is not allowed$"),
        ([], "host mixed.test resolved to no address"),
    ],
)
def test_every_resolved_address_is_checked(canary: Canary, answers: list[str], reason: str) -> None:
    names = resolver({"mixed.test": answers})
    policy = FetchPolicy(allowed_ports=frozenset({canary.port}))
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: {reason}"):
        fetch_image_bytes(
            f"http://mixed.test:{canary.port}/", field=FIELD, policy=policy, resolver=names
        )
    assert canary.connections() == 0


def test_a_refusal_does_not_say_where_a_name_resolved_but_the_log_does(
    canary: Canary, caplog: pytest.LogCaptureFixture
) -> None:
    """Naming the address would let any caller map internal DNS through job errors."""
    names = resolver({"db.internal.test": ["10.20.30.40"]})
    policy = FetchPolicy(allowed_ports=frozenset({canary.port}))
    with (
        caplog.at_level(logging.WARNING, logger="reelforge.fetch"),
        pytest.raises(ImageFetchFailed) as refused,
    ):
        fetch_image_bytes(
            f"http://db.internal.test:{canary.port}/", field=FIELD, policy=policy, resolver=names
        )
    assert refused.value.message == f"{FIELD}: host db.internal.test is not allowed"
    assert "10.20.30.40" not in refused.value.message
    assert any("10.20.30.40" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/x",
        "http://0x7f000002:{port}/x",
        "http://[::ffff:127.0.0.2]:{port}/x",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_redirect_to_a_non_public_address_is_refused(
    site: Site, canary: Canary, target: str
) -> None:
    site.routes["/jump"] = redirect(target.format(port=canary.port))
    policy = site.policy(allowed_ports=frozenset({80, site.port, canary.port}))
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: host .* is not allowed$"):
        fetch_image_bytes(f"http://127.0.0.1:{site.port}/jump", field=FIELD, policy=policy)
    assert canary.connections() == 0
    assert [path for path, _ in site.seen] == ["/jump"]


def test_redirect_loop_is_refused(site: Site) -> None:
    site.routes["/loop"] = redirect("/loop")
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: more than 5 redirects$"):
        fetch_image_bytes(f"http://127.0.0.1:{site.port}/loop", field=FIELD, policy=site.policy())
    assert len(site.seen) == 6


# --- refusing what comes back -----------------------------------------------------------


def test_non_image_body_is_refused_whatever_its_content_type(site: Site) -> None:
    site.routes["/fake.png"] = send(200, b"<html>not a picture</html>", "image/png")
    url = f"http://127.0.0.1:{site.port}/fake.png"
    with pytest.raises(InvalidImage, match=f"^{FIELD}: image is not a JPG/JPEG or PNG file$"):
        fetch_image(url, field=FIELD, policy=site.policy())


def test_error_status_is_refused(site: Site) -> None:
    url = f"http://127.0.0.1:{site.port}/missing.png"
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: HTTP 404 from host 127.0.0.1$"):
        fetch_image_bytes(url, field=FIELD, policy=site.policy())


def test_closed_port_is_a_fetch_failure(site: Site) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    policy = site.policy(allowed_ports=frozenset({port}))
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: fetching from host 127.0.0.1 failed"):
        fetch_image_bytes(f"http://127.0.0.1:{port}/", field=FIELD, policy=policy)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(endless(b"", 0.05, ("Content-Length", "100001")), id="declared"),
        pytest.param(endless(b"x" * 65536, 0, ("Connection", "close")), id="undeclared"),
        pytest.param(
            endless(b"x" * 65536, 0, ("Transfer-Encoding", "chunked"), chunked=True), id="chunked"
        ),
    ],
)
def test_body_over_the_byte_cap_is_refused(site: Site, route: Route) -> None:
    site.routes["/big.png"] = route
    url = f"http://127.0.0.1:{site.port}/big.png"
    policy = site.policy(max_bytes=100_000)
    started = time.monotonic()
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: .* larger than 100000 bytes"):
        fetch_image_bytes(url, field=FIELD, policy=policy)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(endless(b"\x89", 0.2, ("Content-Length", "1000000")), id="drip"),
        pytest.param(silent, id="silent"),
    ],
)
def test_slow_server_is_stopped_by_the_total_deadline(site: Site, route: Route) -> None:
    site.routes["/slow.png"] = route
    url = f"http://127.0.0.1:{site.port}/slow.png"
    started = time.monotonic()
    with pytest.raises(ImageFetchFailed, match=f"^{FIELD}: .* within the deadline of 1 s$"):
        fetch_image_bytes(url, field=FIELD, policy=site.policy(deadline_seconds=1.0))
    assert 1.0 <= time.monotonic() - started < 3.0


def test_slow_resolver_is_stopped_by_the_deadline() -> None:
    answered = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        answered.wait(5)
        return ["93.184.216.34"]

    started = time.monotonic()
    match = f"^{FIELD}: host slow.test was not resolved within the deadline of 0.5 s$"
    try:
        with pytest.raises(ImageFetchFailed, match=match):
            fetch_image_bytes(
                "http://slow.test/a.png",
                field=FIELD,
                policy=FetchPolicy(deadline_seconds=0.5),
                resolver=hanging,
            )
        assert time.monotonic() - started < 1.5
    finally:
        answered.set()


# --- https: connect to the checked address, verify the hostname -------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=images.test"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=DNS:images.test"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_site(certificate: tuple[Path, Path]) -> Iterator[tuple[Site, list[str]]]:
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)

    def record(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        names.append(str(name))

    context.sni_callback = record
    for server in _serving(Site(context)):
        yield server, names


def test_https_keeps_sni_and_verification_for_the_hostname(
    tls_site: tuple[Site, list[str]],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, server_names = tls_site
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    monkeypatch.setattr(fetch, "_tls_context", lambda: trusted)
    names = resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    url = f"https://images.test:{site.port}/image.png"
    assert fetch_image_bytes(url, field=FIELD, policy=site.policy(), resolver=names) == PNG
    assert server_names == ["images.test"]
    assert site.seen[0][1]["Host"] == f"images.test:{site.port}"
    mismatch = f"^{FIELD}: fetching from host other.test failed .*CERTIFICATE_VERIFY_FAILED"
    with pytest.raises(ImageFetchFailed, match=mismatch):
        fetch_image_bytes(
            f"https://other.test:{site.port}/image.png",
            field=FIELD,
            policy=site.policy(),
            resolver=names,
        )


def test_https_refuses_a_certificate_outside_the_default_roots(
    tls_site: tuple[Site, list[str]],
) -> None:
    site, server_names = tls_site
    names = resolver({"images.test": ["127.0.0.1"]})
    with pytest.raises(ImageFetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_image_bytes(
            f"https://images.test:{site.port}/image.png",
            field=FIELD,
            policy=site.policy(),
            resolver=names,
        )
    assert server_names == ["images.test"]
    assert site.seen == []


# --- the address predicate --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:93.184.216.34", True),  # IPv4-mapped: judged as the IPv4 address
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("2002:5db8:d822::1", True),  # 6to4 of 93.184.216.34
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("169.254.1.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("198.18.0.1", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("2001:db8::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::93.184.216.34", False),  # IPv4-compatible: deprecated, never routed
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ip_address(address)) is public
