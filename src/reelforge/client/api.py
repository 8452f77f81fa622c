"""``Client`` and ``AsyncClient``: one surface over the flows, carried out sync or async.

Both take the API's base URL including ``/v2`` (as the reference's examples do) and a key.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import httpx

from reelforge.client import flows, sse
from reelforge.client.flows import (
    Action,
    Call,
    Failed,
    Fetch,
    Flow,
    Line,
    Listen,
    Opened,
    Outcome,
    ReadLine,
    Reply,
    Sleep,
    Streamed,
)
from reelforge.client.images import ImageInput, image_field
from reelforge.client.models import Generation, Page
from reelforge.contract import DEFAULT_MODEL

# What the methods return, by client: the value itself (Client) or an awaitable of it
# (AsyncClient); a listing is an iterator, async for AsyncClient.
G = TypeVar("G")  # Generation
P = TypeVar("P")  # Path
L = TypeVar("L")  # Page
D = TypeVar("D")  # None (a delete)
It = TypeVar("It")  # Iterator[Generation] or AsyncIterator[Generation]
T = TypeVar("T")

ProgressHook = Callable[[Generation], None]
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


class _Surface(Generic[G, P, L, D, It]):
    """The public methods, written once; subclasses say how a flow is carried out."""

    def __init__(self, base_url: str, api_key: str, *, policy: flows.Policy | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.policy = policy or flows.Policy()

    def create(
        self,
        prompt: str,
        *,
        model: str = DEFAULT_MODEL,
        first_frame_image: ImageInput | None = None,
        last_frame_image: ImageInput | None = None,
        duration: int = 6,
        resolution: str = "768P",
        prompt_optimizer: bool = True,
    ) -> G:
        """Start a generation. Local images are checked and sent as base64 data URIs."""
        body = _body(
            prompt,
            model,
            first_frame_image,
            last_frame_image,
            duration,
            resolution,
            prompt_optimizer,
        )
        return self._generation(flows.create(body, self.policy))

    def generate(
        self,
        prompt: str,
        *,
        output: Path | str | None = None,
        timeout: float = 1200.0,
        on_progress: ProgressHook | None = None,
        model: str = DEFAULT_MODEL,
        first_frame_image: ImageInput | None = None,
        last_frame_image: ImageInput | None = None,
        duration: int = 6,
        resolution: str = "768P",
        prompt_optimizer: bool = True,
    ) -> G:
        """Create, wait, and download the video to ``output`` if given."""
        body = _body(
            prompt,
            model,
            first_frame_image,
            last_frame_image,
            duration,
            resolution,
            prompt_optimizer,
        )
        target = None if output is None else Path(output)
        return self._generation(flows.generate(body, timeout, on_progress, target, self.policy))

    def get(self, generation_id: str) -> G:
        return self._generation(flows.get(generation_id, self.policy))

    def cancel(self, generation_id: str) -> G:
        """Cancel (reelforge's extension): a queued generation ends at once, a running one
        at its next step; returns the generation as it then is."""
        return self._generation(flows.cancel(generation_id, self.policy))

    def wait(
        self,
        generation_id: str,
        *,
        timeout: float = 1200.0,
        on_progress: ProgressHook | None = None,
    ) -> G:
        """Follow the live stream (or poll, on servers without one) until completed
        (returned), error (``GenerationFailed``) or ``Timeout``."""
        return self._generation(flows.wait(generation_id, timeout, on_progress, self.policy))

    def download(self, generation: Generation, path: Path | str) -> P:
        """Stream the video to ``path``; resumes after a drop, checks the size."""
        return self._path(flows.download(generation, Path(path), self.policy))

    def list(self, *, after: str | None = None, limit: int = 20) -> It:
        """Every generation of the key, newest first (reelforge's extension), fetched page by
        page as the iteration goes: ``limit`` (1..100) per request, not in all (take the
        first n with ``itertools.islice``). ``after``: start below this generation's id.
        ``for g in client.list()``; ``async for`` with ``AsyncClient``."""
        return self._items(flows.listing(after, limit, self.policy))

    def list_page(self, *, after: str | None = None, limit: int = 20) -> L:
        """One page: ``limit`` (1..100) generations, newest first, older than ``after``;
        the next page is ``list_page(after=page.last_id)`` while ``page.has_more``."""
        return self._page(flows.list_page(after, limit, self.policy))

    def delete(self, generation_id: str) -> D:
        """Delete a generation with its video and inputs (reelforge's extension), cancelling
        it first if it has not ended; afterwards its id is unknown (``ApiError`` 404), as is
        an id this key never had."""
        return self._deleted(flows.delete(generation_id, self.policy))

    def _generation(self, flow: Flow[Generation]) -> G:
        raise NotImplementedError

    def _path(self, flow: Flow[Path]) -> P:
        raise NotImplementedError

    def _page(self, flow: Flow[Page]) -> L:
        raise NotImplementedError

    def _deleted(self, flow: Flow[None]) -> D:
        raise NotImplementedError

    def _items(self, flow: flows.Listing) -> It:
        raise NotImplementedError


def _body(
    prompt: str,
    model: str,
    first_frame_image: ImageInput | None,
    last_frame_image: ImageInput | None,
    duration: int,
    resolution: str,
    prompt_optimizer: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "duration": duration,
        "resolution": resolution,
        "prompt_optimizer": prompt_optimizer,
    }
    images = (("first_frame_image", first_frame_image), ("last_image_url", last_frame_image))
    for name, value in images:
        encoded = image_field(value, field=name)
        if encoded is not None:
            body[name] = encoded
    return body


class Client(_Surface[Generation, Path, Page, None, Iterator[Generation]]):
    """The synchronous client."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        policy: flows.Policy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, policy=policy)
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _generation(self, flow: Flow[Generation]) -> Generation:
        return self._drive(flow)

    def _path(self, flow: Flow[Path]) -> Path:
        return self._drive(flow)

    def _page(self, flow: Flow[Page]) -> Page:
        return self._drive(flow)

    def _deleted(self, flow: Flow[None]) -> None:
        return self._drive(flow)

    def _items(self, flow: flows.Listing) -> Iterator[Generation]:
        outcome: Outcome = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration:
                return
            if isinstance(step, Generation):
                outcome = None
                yield step
            else:
                outcome = self._carry_out(step, _SyncStream())

    def _drive(self, flow: Flow[T]) -> T:
        outcome: Outcome = None
        with contextlib.closing(_SyncStream()) as stream:
            while True:
                try:
                    action = flow.send(outcome)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                outcome = self._carry_out(action, stream)

    def _carry_out(self, action: Action, stream: _SyncStream) -> Outcome:
        if isinstance(action, Sleep):
            time.sleep(action.seconds)
            return None
        try:
            if isinstance(action, Listen):
                stream.close()
                return stream.open(self._http, self._listen_request(action))
            if isinstance(action, ReadLine):
                return stream.read()
            if isinstance(action, Call):
                response = self._http.request(
                    action.method,
                    self.base_url + action.path,
                    params=action.params,
                    json=action.body,
                    headers=self.headers,
                )
                return Reply(response.status_code, response.headers, response.content)
            return self._fetch(action)
        except httpx.TransportError as exc:
            return Failed(exc, sent=not isinstance(exc, _NOT_SENT))

    def _listen_request(self, action: Listen) -> httpx.Request:
        return _listen_request(self._http, self.base_url, self.headers, action)

    def _fetch(self, action: Fetch) -> Streamed | Failed:
        headers = {"Range": f"bytes={action.offset}-"} if action.offset else {}
        with self._http.stream("GET", action.url, headers=headers) as response:
            if response.status_code not in (200, 206):
                return Streamed(response.status_code, response.headers, complete=True)
            mode = "ab" if response.status_code == 206 else "wb"
            with action.path.open(mode) as sink:
                try:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                except httpx.TransportError:
                    return Streamed(response.status_code, response.headers, complete=False)
            return Streamed(response.status_code, response.headers, complete=True)


class AsyncClient(
    _Surface[
        Awaitable[Generation],
        Awaitable[Path],
        Awaitable[Page],
        Awaitable[None],
        AsyncIterator[Generation],
    ]
):
    """The asyncio client: the same methods, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        policy: flows.Policy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, policy=policy)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=True)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _generation(self, flow: Flow[Generation]) -> Awaitable[Generation]:
        return self._drive(flow)

    def _path(self, flow: Flow[Path]) -> Awaitable[Path]:
        return self._drive(flow)

    def _page(self, flow: Flow[Page]) -> Awaitable[Page]:
        return self._drive(flow)

    def _deleted(self, flow: Flow[None]) -> Awaitable[None]:
        return self._drive(flow)

    async def _items(self, flow: flows.Listing) -> AsyncIterator[Generation]:
        outcome: Outcome = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration:
                return
            if isinstance(step, Generation):
                outcome = None
                yield step
            else:
                outcome = await self._carry_out(step, _AsyncStream())

    async def _drive(self, flow: Flow[T]) -> T:
        outcome: Outcome = None
        stream = _AsyncStream()
        try:
            while True:
                try:
                    action = flow.send(outcome)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                outcome = await self._carry_out(action, stream)
        finally:
            await stream.aclose()

    async def _carry_out(self, action: Action, stream: _AsyncStream) -> Outcome:
        if isinstance(action, Sleep):
            await anyio.sleep(action.seconds)
            return None
        try:
            if isinstance(action, Listen):
                await stream.aclose()
                request = _listen_request(self._http, self.base_url, self.headers, action)
                return await stream.open(self._http, request)
            if isinstance(action, ReadLine):
                return await stream.read()
            if isinstance(action, Call):
                response = await self._http.request(
                    action.method,
                    self.base_url + action.path,
                    params=action.params,
                    json=action.body,
                    headers=self.headers,
                )
                return Reply(response.status_code, response.headers, response.content)
            return await self._fetch(action)
        except httpx.TransportError as exc:
            return Failed(exc, sent=not isinstance(exc, _NOT_SENT))

    async def _fetch(self, action: Fetch) -> Streamed | Failed:
        headers = {"Range": f"bytes={action.offset}-"} if action.offset else {}
        async with self._http.stream("GET", action.url, headers=headers) as response:
            if response.status_code not in (200, 206):
                return Streamed(response.status_code, response.headers, complete=True)
            mode = "ab" if response.status_code == 206 else "wb"
            with action.path.open(mode) as sink:
                try:
                    async for chunk in response.aiter_bytes():
                        sink.write(chunk)
                except httpx.TransportError:
                    return Streamed(response.status_code, response.headers, complete=False)
            return Streamed(response.status_code, response.headers, complete=True)


def _listen_request(
    http: httpx.Client | httpx.AsyncClient, base_url: str, headers: dict[str, str], action: Listen
) -> httpx.Request:
    """The GET that opens a stream: the client's timeouts, but reads wait ``silence``."""
    extra = {"Accept": sse.MEDIA_TYPE, "Cache-Control": "no-cache"}
    if action.last_event_id is not None:
        extra["Last-Event-ID"] = action.last_event_id
    limits = http.timeout
    timeout = httpx.Timeout(
        connect=limits.connect, read=action.silence, write=limits.write, pool=limits.pool
    )
    return http.build_request(
        "GET",
        base_url + action.path,
        params=action.params,
        headers=headers | extra,
        timeout=timeout,
    )


def _is_stream(response: httpx.Response) -> bool:
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    return response.status_code == 200 and media_type == sse.MEDIA_TYPE


class _SyncStream:
    """The one stream a synchronous operation has open (``Listen`` … ``ReadLine``)."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None
        self.lines: Iterator[str] = iter(())

    def open(self, http: httpx.Client, request: httpx.Request) -> Opened | Reply:
        response = http.send(request, stream=True)
        if not _is_stream(response):
            body = response.read()
            response.close()
            return Reply(response.status_code, response.headers, body)
        self.response, self.lines = response, response.iter_lines()
        return Opened(response.headers)

    def read(self) -> Line:
        """The next line (None at the end); httpx's errors for a drop or a silence."""
        return Line(next(self.lines, None))

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        self.response, self.lines = None, iter(())


class _AsyncStream:
    """The one stream an asynchronous operation has open."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None
        self.lines: AsyncIterator[str] | None = None

    async def open(self, http: httpx.AsyncClient, request: httpx.Request) -> Opened | Reply:
        response = await http.send(request, stream=True)
        if not _is_stream(response):
            body = await response.aread()
            await response.aclose()
            return Reply(response.status_code, response.headers, body)
        self.response, self.lines = response, response.aiter_lines()
        return Opened(response.headers)

    async def read(self) -> Line:
        if self.lines is None:
            return Line(None)
        return Line(await anext(self.lines, None))

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()
        self.response, self.lines = None, None
