"""A time limit for launch-time work that runs user code (the chat template's launch check).

A chat template is code from a model repository: a template whose loops never end would hang the
launch check for ever (the per-record renders have their own budget, ``--template-timeout``).
:func:`call_with_time_limit` runs the check in a helper thread; when it is not done in time, the
thread is interrupted (an asynchronous :class:`~transforms.template_env.TemplateLimitExceeded`,
delivered between two bytecodes, repeated until the thread ends: the check catches a failing
render and goes on to the next one) and :class:`LaunchCheckTimeout` is raised.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Callable, TypeVar

from transforms.template_env import TemplateLimitExceeded

T = TypeVar("T")


class LaunchCheckTimeout(Exception):
    """The launch-time call did not finish within its time limit (it was interrupted)."""


def call_with_time_limit(fn: Callable[[], T], seconds: float, *, name: str = "chatshards-launch-check") -> T:
    """``fn()``, or :class:`LaunchCheckTimeout` when it runs longer than ``seconds`` (its exceptions
    propagate unchanged)."""
    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        while thread.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                       ctypes.py_object(TemplateLimitExceeded))
            thread.join(0.05)
        raise LaunchCheckTimeout(f"did not finish in {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
