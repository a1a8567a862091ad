"""The config client: one in-memory copy of a namespace/environment, kept current by the
sidecar's change stream (``GET /v1/watch/{namespace}/{environment}``, Server-Sent Events)."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import httpx
from httpx_sse import SSEError, connect_sse

__all__ = ["Change", "ConfigClient", "DEFAULT_URL"]

#: Where the sidecar listens unless ``MYCOSYNTH_SIDECAR_URL`` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8686"

_log = logging.getLogger("mycosynth")
_MISSING: Any = object()


@dataclass(frozen=True)
class Change:
    """One change the client applied, as given to ``on_change`` callbacks.

    ``cause`` is ``"event"`` (a change set), ``"inherited"`` (a parent environment's change),
    ``"resync"`` (the subscriber reloaded), or ``"state"`` (the client caught up after a
    reconnect, with whatever changed meanwhile).
    """

    version: int
    keys: Tuple[str, ...]
    #: The new value of each changed key that still has one.
    values: Mapping[str, Any]
    #: Changed keys that no longer have a value.
    deleted: Tuple[str, ...] = ()
    author: str = ""
    reason: str = ""
    #: Who approved the change request it came from (empty: none was needed).
    approved_by: Tuple[str, ...] = ()
    #: The change request it came from (None: a direct change).
    change_request: Optional[str] = None
    cause: str = "event"
    previous_version: int = 0


class ConfigClient:
    """Config of one namespace/environment, read from memory.

    ``ConfigClient()`` connects to the sidecar at ``$MYCOSYNTH_SIDECAR_URL`` (default
    ``http://127.0.0.1:8686``), asks it what it serves, loads every value (waiting up to
    ``start_timeout`` seconds for the sidecar), and follows its change stream on a daemon
    thread that reconnects with backoff. Reads never touch the network, and keep answering
    from the last copy while the sidecar is down or restarting.

    >>> with ConfigClient() as config:                          # doctest: +SKIP
    ...     config.get("http.timeout_ms", default=250)
    250
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        namespace: Optional[str] = None,
        environment: Optional[str] = None,
        timeout: float = 5.0,
        start_timeout: float = 10.0,
        stream_timeout: float = 60.0,
        backoff: Tuple[float, float] = (0.1, 5.0),
        watch: bool = True,
    ) -> None:
        self._url = (url or os.environ.get("MYCOSYNTH_SIDECAR_URL") or DEFAULT_URL).rstrip("/")
        self._http = httpx.Client(base_url=self._url, timeout=timeout)
        self._backoff = backoff
        self._stop = threading.Event()
        self._callbacks: List[Callable[[Change], None]] = []
        self._connected = False
        self._response: Optional[httpx.Response] = None
        self._values: Dict[str, Any] = {}
        self._version = 0
        self._revision = ""
        try:
            names = self._load(namespace, environment, start_timeout)
        except BaseException:
            self._http.close()
            raise
        self.namespace, self.environment = names
        self._watch_path = f"/v1/watch/{self.namespace}/{self.environment}"
        # Heartbeats come every 15 s by default: a stream silent for longer is dead.
        self._stream_http = httpx.Client(
            base_url=self._url, timeout=httpx.Timeout(timeout, read=stream_timeout)
        )
        self._thread: Optional[threading.Thread] = None
        if watch:
            self._thread = threading.Thread(
                target=self._follow, name="mycosynth-watch", daemon=True
            )
            self._thread.start()

    # Reads: memory only.

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key``, else ``default``; ``KeyError`` naming the key without one."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(f"config key {key!r} is not set and has no default")
            return default
        return value

    def get_int(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        min_val: Optional[int] = None,
        max_val: Optional[int] = None,
    ) -> int:
        """The integer value of ``key`` within ``[min_val, max_val]``: ``ValueError`` naming
        the bound it breaks, ``TypeError`` if it is not an integer, ``KeyError`` if it has no
        value and no ``default`` (a default is returned as given)."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            return self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"config key {key!r} is {value!r}, not an integer")
        if min_val is not None and value < min_val:
            raise ValueError(f"config key {key!r} is {value}, below min_val={min_val}")
        if max_val is not None and value > max_val:
            raise ValueError(f"config key {key!r} is {value}, above max_val={max_val}")
        return value

    def get_bool(self, key: str, default: Any = _MISSING) -> bool:
        """The boolean value of ``key``: ``TypeError`` if it is not ``true``/``false``."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            return self.get(key, default)
        if not isinstance(value, bool):
            raise TypeError(f"config key {key!r} is {value!r}, not a boolean")
        return value

    def get_all(self) -> Dict[str, Any]:
        """Every key with its value (a copy; one version)."""
        return dict(self._values)

    @property
    def version(self) -> int:
        """The version held."""
        return self._version

    @property
    def connected(self) -> bool:
        """Whether the change stream is connected now (reads work either way)."""
        return self._connected

    def on_change(self, callback: Callable[[Change], None]) -> Callable[[Change], None]:
        """Calls ``callback(change)`` on the client's thread after each change is applied
        (the reads it makes see the change). Returns ``callback``, so it works as a decorator.
        An exception in it is logged and does not stop the stream."""
        self._callbacks.append(callback)
        return callback

    def close(self) -> None:
        """Stops following changes; reads keep answering from the last copy."""
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing from another thread may race
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._stream_http.close()
        self._http.close()

    def __enter__(self) -> "ConfigClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ConfigClient({self._url!r}, namespace={self.namespace!r}, "
            f"environment={self.environment!r}, version={self._version})"
        )

    # Start: what the sidecar serves, and every value.

    def _load(
        self, namespace: Optional[str], environment: Optional[str], start_timeout: float
    ) -> Tuple[str, str]:
        deadline = time.monotonic() + start_timeout
        delay, last = self._backoff[0], "no answer"
        while True:
            try:
                if namespace is None or environment is None:
                    served = self._json(self._http.get("/v1/config"))
                    namespace = namespace or served["namespace"]
                    environment = environment or served["environment"]
                response = self._http.get(f"/v1/config/{namespace}/{environment}")
                if response.status_code != 503:
                    body = self._json(response)
                    self._apply_state(body, _revision(response.headers.get("etag")), notify=False)
                    return namespace, environment
                last = response.json().get("message", "the sidecar is starting")
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"no config from the Mycosynth sidecar at {self._url} within "
                    f"{start_timeout:g} s: {last}"
                )
            time.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    def _json(self, response: httpx.Response) -> Dict[str, Any]:
        if response.status_code == 404:
            raise LookupError(response.json().get("message", response.text))
        if response.status_code != 200:
            raise ConnectionError(
                f"the Mycosynth sidecar at {self._url} answered {response.status_code}: "
                f"{response.text}"
            )
        return response.json()

    # The change stream, on the client's thread.

    def _follow(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                headers = {"Last-Event-ID": self._revision}
                with connect_sse(
                    self._stream_http, "GET", self._watch_path, headers=headers
                ) as source:
                    self._response = source.response
                    if source.response.status_code != 200:
                        raise ConnectionError(f"change stream: {source.response.status_code}")
                    self._connected = True
                    delay = self._backoff[0]
                    for event in source.iter_sse():
                        if self._stop.is_set():
                            return
                        self._on_event(event.event, event.data, event.id)
            except (httpx.HTTPError, SSEError, ConnectionError, ValueError) as err:
                if not self._stop.is_set():
                    _log.info("mycosynth change stream interrupted (%s); reconnecting", err)
            finally:
                self._connected = False
                self._response = None
            # Jitter keeps a fleet of clients from reconnecting in step after a restart.
            if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                return
            delay = min(delay * 2, self._backoff[1])

    def _on_event(self, kind: str, data: str, event_id: str) -> None:
        if kind == "state":
            change = self._apply_state(json.loads(data), event_id, notify=True)
        elif kind == "change":
            change = self._apply_change(json.loads(data), event_id)
        else:
            return
        if change is not None:
            for callback in list(self._callbacks):
                try:
                    callback(change)
                except Exception:  # noqa: BLE001 - a callback's bug must not stop updates
                    _log.exception("mycosynth on_change callback failed")

    def _apply_state(
        self, body: Mapping[str, Any], revision: str, *, notify: bool
    ) -> Optional[Change]:
        values = dict(body["values"])
        before, previous = self._values, self._version
        self._values, self._version, self._revision = values, int(body["version"]), revision
        if not notify:
            return None
        keys = sorted(
            k
            for k in before.keys() | values.keys()
            if before.get(k, _MISSING) != values.get(k, _MISSING)
        )
        if not keys:
            return None
        return Change(
            version=self._version,
            previous_version=previous,
            keys=tuple(keys),
            values={k: values[k] for k in keys if k in values},
            deleted=tuple(k for k in keys if k not in values),
            cause="state",
        )

    def _apply_change(self, body: Mapping[str, Any], revision: str) -> Change:
        values = dict(self._values)
        values.update(body.get("values", {}))
        for key in body.get("deleted", ()):
            values.pop(key, None)
        self._values, self._version, self._revision = values, int(body["version"]), revision
        return Change(
            version=self._version,
            previous_version=int(body.get("previous_version", 0)),
            keys=tuple(body.get("keys", ())),
            values=dict(body.get("values", {})),
            deleted=tuple(body.get("deleted", ())),
            author=body.get("author", ""),
            reason=body.get("reason", ""),
            approved_by=tuple(body.get("approved_by") or ()),
            change_request=body.get("change_request"),
            cause=body.get("cause", "event"),
        )


def _revision(etag: Optional[str]) -> str:
    """The revision an ``ETag`` names (``"42"`` -> ``42``), the change stream's event id."""
    if not etag:
        return ""
    return etag.removeprefix("W/").strip('"')
