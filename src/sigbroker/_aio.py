"""Async receivers: the package's asyncio plumbing.

:func:`is_async_callable` tells a receiver to await from one to call.
:func:`run_to_completion` serves an eager ``Signal.send`` (a one-off private
loop); :class:`EventLoopThread` serves the worker and the in-memory broker (one
long-lived loop in a daemon thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["EventLoopThread", "is_async_callable", "run_to_completion"]

_T = TypeVar("_T")
# asgiref's markcoroutinefunction() sets this marker on Python < 3.12.
_LEGACY_COROUTINE_MARK = getattr(asyncio.coroutines, "_is_coroutine", None)


def is_async_callable(func: object) -> bool:
    """True if calling ``func`` returns a coroutine: a receiver to await, not to call."""
    if inspect.iscoroutinefunction(func):
        return True
    marker = getattr(func, "_is_coroutine", None)
    if marker is not None and marker is _LEGACY_COROUTINE_MARK:
        return True
    # An instance whose __call__ is a coroutine function is async too (Django misses these).
    return callable(func) and inspect.iscoroutinefunction(type(func).__call__)


def run_to_completion(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to its end from synchronous code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        busy = False  # decided outside the handler: receiver errors must not chain to this
    else:
        busy = True
    if not busy:
        return _run_on_private_loop(make)
    # This thread's loop is busy running us and can not be re-entered: use a fresh
    # loop in a worker thread, carrying the caller's context variables along.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sigbroker-send") as pool:
        return pool.submit(context.run, _run_on_private_loop, make).result()


def _run_on_private_loop(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    # Like asyncio.run(), minus set_event_loop(): the thread's current loop stays as it was.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


class EventLoopThread:
    """An asyncio loop in a daemon thread, where async receivers run.

    Started on first use, so a worker with only sync receivers never starts it.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        return future.result()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="sigbroker-async", daemon=True
                )
                self._thread.start()
            return self._loop

    def close(self) -> None:
        """Stop the loop and its thread; safe to call twice."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
