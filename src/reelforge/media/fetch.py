"""Guarded fetch of user-supplied image URLs (and posts to webhook URLs, ``post_json``): no
request ever reaches a non-public address.

Each hop (the first request and every redirect) is checked before it is sent: scheme
http/https, no credentials in the URL, an allowed port; then the host is resolved once
here and *every* address it resolves to must be public. The connection is pinned to
those checked addresses by a network backend that never resolves again, so a second
DNS answer cannot rebind the host to an internal address. The URL itself is sent
unchanged, so the ``Host`` header, TLS SNI and certificate verification all use the
hostname. Redirects are followed by hand, each one re-checked.

The whole fetch (DNS, connects, TLS handshakes, headers, body, every redirect) shares
one wall-clock deadline: every socket operation gets the remaining budget as timeout.
No proxy settings, certificate paths or cookies are read from the environment or kept
between hops, and no credentials are ever sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from PIL import Image

from reelforge.errors import ImageFetchFailed
from reelforge.media.intake import load_image

log = logging.getLogger("reelforge.fetch")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``resolver(host, port)`` returns every address of ``host`` as text, e.g. ``["192.0.2.7"]``."""

_SCHEMES = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_METADATA = frozenset(map(ipaddress.ip_address, ["169.254.169.254", "fd00:ec2::254"]))
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol)


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may do. The defaults are for URLs from untrusted clients."""

    max_bytes: int = 20 * 1024 * 1024
    """Byte cap on the response body (the contract allows images up to 20 MB)."""
    deadline_seconds: float = 20.0
    """Total wall-clock budget in seconds for the whole fetch, redirects and DNS included."""
    max_redirects: int = 5
    allow_private: bool = False
    """Trusted networks and tests only: allow non-public addresses and any port."""
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Non-public networks allowed anyway, e.g. ``127.0.0.1/32`` in a test."""
    allowed_ports: frozenset[int] = frozenset({80, 443})
    """Ports a URL may name; ignored when ``allow_private`` is set (any port then)."""


def fetch_image(url: str, *, field: str, policy: FetchPolicy) -> Image.Image:
    """Fetch ``url`` and check it with ``intake.load_image``.

    Raises ``ImageFetchFailed`` if the fetch fails and ``InvalidImage`` if the body is not
    an acceptable image (the Content-Type header is not trusted).
    """
    return load_image(fetch_image_bytes(url, field=field, policy=policy), field=field)


def fetch_image_bytes(
    url: str, *, field: str, policy: FetchPolicy, resolver: Resolver | None = None
) -> bytes:
    """Return the body of a 2xx answer to ``GET url``, following redirects under ``policy``.

    ``resolver`` replaces ``socket.getaddrinfo`` (tests map fake names to addresses).
    Every failure raises ``ImageFetchFailed`` with a message naming ``field``.
    """
    deadline = _Deadline(policy.deadline_seconds)
    current = _parse(url, field)
    for _ in range(policy.max_redirects + 1):
        hop = _checked_hop(current, field, policy, resolver or _system_resolver, deadline)
        answer = _get(hop, field, policy, deadline)
        if isinstance(answer, bytes):
            return answer
        current = answer
    raise _failure(field, f"more than {policy.max_redirects} redirects")


def post_json(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    field: str,
    policy: FetchPolicy,
    resolver: Resolver | None = None,
) -> tuple[int, bytes]:
    """``POST`` the JSON ``body`` to ``url`` (webhooks) under the same guard as image
    fetches: the status and the first ``policy.max_bytes`` of the answer's body, whatever
    the status (a redirect is not followed). Every failure to get an answer raises
    ``ImageFetchFailed`` naming ``field``."""
    deadline = _Deadline(policy.deadline_seconds)
    hop = _checked_hop(_parse(url, field), field, policy, resolver or _system_resolver, deadline)
    sent = {"Content-Type": "application/json", "User-Agent": "reelforge-webhooks", **headers}
    request_headers = [(b"Host", hop.url.netloc)] + [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in sent.items()
    ]
    ssl_context = _tls_context() if hop.url.scheme == "https" else None
    request = httpcore.URL(
        scheme=hop.url.raw_scheme, host=hop.url.raw_host, port=hop.port, target=hop.url.raw_path
    )
    backend = _PinnedBackend(hop, deadline)
    try:
        with (
            httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=backend) as pool,
            pool.stream("POST", request, headers=request_headers, content=body) as response,
        ):
            answer = bytearray()
            for chunk in response.iter_stream():  # the first ``max_bytes`` are enough
                answer += chunk
                if len(answer) >= policy.max_bytes:
                    break
            return response.status, bytes(answer[: policy.max_bytes])
    except httpcore.TimeoutException as exc:
        reason = f"no complete answer from host {hop.host} within {deadline.seconds:g} s"
        raise _failure(field, reason) from exc
    except _TRANSPORT_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise _failure(field, f"posting to host {hop.host} failed ({detail})") from exc


def is_public_address(address: IPAddress) -> bool:
    """True when ``address`` is globally routable unicast and carries no non-public IPv4.

    IPv4-mapped (``::ffff:a.b.c.d``), 6to4 (``2002::/16``) and NAT64 (``64:ff9b::/96``)
    addresses are judged as the IPv4 address they stand for (older Pythons, Debian's 3.11.2
    among them, call all of 6to4 private; later ones call it global). Teredo and
    IPv4-compatible addresses must be public themselves and so must every IPv4 address
    embedded in them.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _is_public_unicast(address.ipv4_mapped)
        if address.sixtofour is not None:
            return _is_public_unicast(address.sixtofour)
        if address in _NAT64:
            return _is_public_unicast(_last_32_bits(address))
        if not all(_is_public_unicast(embedded) for embedded in _embedded_ipv4(address)):
            return False
    return _is_public_unicast(address)


def _is_public_unicast(address: IPAddress) -> bool:
    # ``is_global`` is the base; the rest differ between Python versions, so they are explicit.
    refused = (
        address.is_multicast,
        address.is_private,
        address.is_reserved,
        address.is_loopback,
        address.is_link_local,
        address.is_unspecified,
        isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
        address in _SHARED_ADDRESS_SPACE,
        address in _METADATA,
    )
    return address.is_global and not any(refused)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses tunnelled in a Teredo (server and client) or ``::a.b.c.d``."""
    embedded = list(address.teredo or ())
    if address in _IPV4_COMPATIBLE:
        embedded.append(_last_32_bits(address))
    return embedded


def _last_32_bits(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)


def _failure(field: str, reason: str) -> ImageFetchFailed:
    return ImageFetchFailed(f"{field}: {reason}")


class _Deadline:
    """The fetch's total wall-clock budget, on the monotonic clock (seconds)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def clamp(self, timeout: float | None) -> float:
        """``timeout`` cut to the remaining budget; ``httpcore.TimeoutException`` when spent."""
        remaining = self.remaining()
        if remaining <= 0:
            raise httpcore.TimeoutException("the fetch deadline has passed")
        return remaining if timeout is None else min(timeout, remaining)


@dataclass(frozen=True)
class _Hop:
    """One request that passed the checks: its URL, origin and the only addresses to connect to."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[str, ...]


def _parse(url: str, field: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _failure(field, f"URL {url!r} is not valid ({exc})") from exc


def _checked_hop(
    url: httpx.URL, field: str, policy: FetchPolicy, resolver: Resolver, deadline: _Deadline
) -> _Hop:
    """Check ``url``'s scheme, credentials and port, then resolve it and check every address."""
    if url.scheme not in _SCHEMES:
        raise _failure(field, f"URL scheme must be http or https, not {url.scheme!r}")
    if url.userinfo:
        raise _failure(field, "URLs with credentials (user:password@) are not allowed")
    host = url.raw_host.decode("ascii")
    port = url.port or _SCHEMES[url.scheme]
    if not host:
        raise _failure(field, f"URL {url} has no host")
    if not 0 < port < 65536 or not (policy.allow_private or port in policy.allowed_ports):
        raise _failure(field, f"port {port} of host {host} is not allowed")
    resolved = _resolve_within(resolver, host, port, deadline, field)
    addresses = tuple(_checked_address(text, host, field, policy) for text in resolved)
    return _Hop(url=url, host=host, port=port, addresses=addresses)


def _checked_address(text: str, host: str, field: str, policy: FetchPolicy) -> str:
    """The address to connect to for ``text`` (IPv4-mapped unwrapped), if the policy allows it.

    A refusal says only that the host is not allowed: naming the address a name resolved to
    would let any caller map internal DNS. The address is logged for operators.
    """
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError as exc:
        log.warning("refused host %s for %s: it resolved to %r, not an address", host, field, text)
        raise _failure(field, f"host {host} is not allowed") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    allowed = (
        policy.allow_private
        or any(address in network for network in policy.allowed_networks)
        or is_public_address(address)
    )
    if not allowed:
        log.warning("refused host %s for %s: its address %s is not public", host, field, address)
        raise _failure(field, f"host {host} is not allowed")
    return str(address)


def _resolve_within(
    resolver: Resolver, host: str, port: int, deadline: _Deadline, field: str
) -> list[str]:
    """``resolver(host, port)`` on a daemon thread, so a hung lookup cannot outlast the deadline.

    On timeout the thread is abandoned; it ends when the system resolver gives up.
    """
    answers: queue.SimpleQueue[list[str] | Exception] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            answers.put(resolver(host, port))
        except (OSError, ValueError) as exc:
            answers.put(exc)

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    try:
        answer = answers.get(timeout=max(deadline.remaining(), 0.0))
    except queue.Empty:
        reason = f"host {host} was not resolved within the deadline of {deadline.seconds:g} s"
        raise _failure(field, reason) from None
    if isinstance(answer, Exception):
        raise _failure(field, f"host {host} could not be resolved ({answer})") from answer
    if not answer:
        raise _failure(field, f"host {host} resolved to no address")
    return answer


def _system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host``, numeric spellings normalised."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _get(hop: _Hop, field: str, policy: FetchPolicy, deadline: _Deadline) -> bytes | httpx.URL:
    """Send ``GET`` for one checked hop: the 2xx body, or the URL a redirect points to."""
    ssl_context = _tls_context() if hop.url.scheme == "https" else None
    backend = _PinnedBackend(hop, deadline)
    request = httpcore.URL(
        scheme=hop.url.raw_scheme, host=hop.url.raw_host, port=hop.port, target=hop.url.raw_path
    )
    headers = [
        (b"Host", hop.url.netloc),
        (b"Accept", b"image/png, image/jpeg"),
        (b"Accept-Encoding", b"identity"),
        (b"User-Agent", b"reelforge-image-fetch"),
    ]
    try:
        with (
            httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=backend) as pool,
            pool.stream("GET", request, headers=headers) as response,
        ):
            if response.status in _REDIRECTS:
                return _redirect_target(hop, response, field)
            if not 200 <= response.status < 300:
                raise _failure(field, f"HTTP {response.status} from host {hop.host}")
            return _read_body(hop, response, field, policy.max_bytes)
    except httpcore.TimeoutException as exc:
        reason = f"no complete answer from host {hop.host} within the deadline of "
        raise _failure(field, f"{reason}{deadline.seconds:g} s") from exc
    except _TRANSPORT_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise _failure(field, f"fetching from host {hop.host} failed ({detail})") from exc


def _tls_context() -> ssl.SSLContext:
    """Certificate verification against certifi's roots; no CA paths from the environment."""
    return httpx.create_ssl_context(trust_env=False)


def _redirect_target(hop: _Hop, response: httpcore.Response, field: str) -> httpx.URL:
    location = _header(response, b"location")
    if location is None:
        raise _failure(field, f"HTTP {response.status} from host {hop.host} without a Location")
    try:
        return hop.url.join(location)
    except httpx.InvalidURL as exc:
        raise _failure(field, f"redirect to {location!r} is not a valid URL ({exc})") from exc


def _read_body(hop: _Hop, response: httpcore.Response, field: str, max_bytes: int) -> bytes:
    """The body, read until it ends or passes ``max_bytes`` (Content-Length only refuses early)."""
    too_large = f"the body from host {hop.host} is larger than {max_bytes} bytes"
    declared = _header(response, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _failure(field, f"{too_large} (Content-Length: {declared})")
    body = bytearray()
    for chunk in response.iter_stream():
        body += chunk
        if len(body) > max_bytes:
            raise _failure(field, too_large)
    return bytes(body)


def _header(response: httpcore.Response, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase), or None."""
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects a hop's origin only to its checked addresses (never resolving again),
    trying them in order, with every socket operation held to the deadline."""

    def __init__(self, hop: _Hop, deadline: _Deadline) -> None:
        self._hop = hop
        self._deadline = deadline
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if (host, port) != (self._hop.host, self._hop.port):
            raise httpcore.ConnectError(f"{host}:{port} is not the checked origin")
        *fallbacks, last = self._hop.addresses
        for address in fallbacks:
            with contextlib.suppress(httpcore.ConnectError):
                return self._connect(address, port, timeout, socket_options)
        return self._connect(last, port, timeout, socket_options)

    def _connect(
        self,
        address: str,
        port: int,
        timeout: float | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.NetworkStream:
        # ``address`` is a numeric IP, so the system backend connects without a DNS lookup.
        stream = self._sockets.connect_tcp(
            address, port, timeout=self._deadline.clamp(timeout), socket_options=socket_options
        )
        return _DeadlineStream(stream, self._deadline)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose reads, writes and TLS handshake never outlast the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._deadline.clamp(timeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
