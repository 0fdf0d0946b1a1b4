"""Zero-code mode: instrument every bedrock-runtime client a process creates.

``bedrock-top run`` puts ``monitor/wrapper/bootstrap`` first on ``PYTHONPATH``; its
``sitecustomize`` loads this file by path and calls :func:`install`. Nothing is imported until
the program itself imports ``botocore.client``: then ``BaseClient.__init__`` (shared by boto3
and aiobotocore clients) is wrapped so that each new ``bedrock-runtime`` client is passed to
``instrument``. The wrapper is imported in isolation so that a program with a top-level package
or module of its own called ``monitor`` keeps it.

This module uses only the standard library at import time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

logger = logging.getLogger("monitor.wrapper")

# Extra import paths (bedrock-top's own site-packages), appended after the program's own.
DEPS_PATH_ENV = "BEDROCK_TOP_DEPS_PATH"
TARGET = "botocore.client"
_PATCHED = "_bedrock_top_patched"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_lock = threading.Lock()
_instrument: Callable[..., Any] | None = None
_failed = False


def install() -> None:
    """Arrange for bedrock-runtime clients to be instrumented as they are created."""
    module = sys.modules.get(TARGET)
    if module is not None:
        _patch(module)
        return
    if not any(isinstance(finder, _PostImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportHook())


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Finds ``botocore.client`` through the other finders and patches it once executed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            _patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        return spec


def _patch(module: ModuleType) -> None:
    try:
        base = module.BaseClient
        original_init = base.__init__
        if getattr(original_init, _PATCHED, False):
            return

        @functools.wraps(original_init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            try:
                if self.meta.service_model.service_name == "bedrock-runtime":
                    instrument = _load_instrument()
                    if instrument is not None:
                        instrument(self)
            except Exception as err:
                logger.warning("bedrock-top: client left uninstrumented: %s", err)

        setattr(__init__, _PATCHED, True)
        base.__init__ = __init__
    except Exception as err:
        logger.warning("bedrock-top: cannot hook botocore client creation: %s", err)


def _is_monitor(name: str) -> bool:
    return name == "monitor" or name.startswith("monitor.")


def _load_instrument() -> Callable[..., Any] | None:
    """Import bedrock-top's ``instrument`` without leaving ``monitor`` in ``sys.modules``."""
    global _instrument, _failed
    if _instrument is not None or _failed:
        return _instrument
    with _lock:
        if _instrument is not None or _failed:
            return _instrument
        theirs = {name: mod for name, mod in sys.modules.items() if _is_monitor(name)}
        for name in theirs:
            del sys.modules[name]
        saved_path = list(sys.path)
        deps = [p for p in os.environ.get(DEPS_PATH_ENV, "").split(os.pathsep) if p]
        sys.path.insert(0, _PACKAGE_ROOT)
        sys.path.extend(p for p in deps if p not in sys.path)
        try:
            module = importlib.import_module("monitor.wrapper.hooks")
            _instrument = module.instrument
        except Exception as err:
            _failed = True
            logger.warning(
                "bedrock-top: cannot load the wrapper (%s); bedrock-runtime calls are not recorded",
                err,
            )
        finally:
            # The program's own path first, bedrock-top's dependencies only after it: they are
            # needed later for lazy imports (tokenizers) and must never shadow the program's.
            sys.path[:] = saved_path + [p for p in deps if p not in saved_path]
            for name in [name for name in sys.modules if _is_monitor(name)]:
                del sys.modules[name]
            sys.modules.update(theirs)
        return _instrument
