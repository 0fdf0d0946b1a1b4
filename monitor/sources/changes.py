"""Being told when a followed log's directory changes, instead of looking twenty times a second.

On Linux the tailer watches the directories of its logs with inotify (through ``inotify_simple``)
and sleeps until something in them changes: an idle monitor wakes about once a second, and a
new line is read as soon as it is written. Where inotify is missing or refused (another
platform, the watch limit reached) the tailer polls as before.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterable

try:
    from inotify_simple import INotify
    from inotify_simple import flags as inotify_flags
except ImportError:  # pragma: no cover - not on Linux
    INotify = None

# What changes a followed file's contents or which file a name refers to.
_CONTENT = ("MODIFY", "CLOSE_WRITE")
_NAMES = ("CREATE", "DELETE", "MOVED_FROM", "MOVED_TO", "DELETE_SELF", "MOVE_SELF")


class DirectoryWatch:
    """Waits until a file in one of the watched directories changes, a timeout passes, or
    :meth:`interrupt` is called (from any thread)."""

    def __init__(self) -> None:
        if INotify is None:  # pragma: no cover - not on Linux
            raise OSError("inotify is not available")
        self._inotify = INotify(nonblocking=True)
        self._mask = 0
        self._names_mask = 0
        for name in _CONTENT + _NAMES:
            self._mask |= getattr(inotify_flags, name)
        for name in _NAMES:
            self._names_mask |= getattr(inotify_flags, name)
        self._ignored = inotify_flags.IGNORED
        self._directories: dict[str, int] = {}
        self._interrupt_r, self._interrupt_w = os.pipe()
        os.set_blocking(self._interrupt_r, False)
        self._poller = select.poll()
        self._poller.register(self._inotify.fileno(), select.POLLIN)
        self._poller.register(self._interrupt_r, select.POLLIN)

    @classmethod
    def create(cls) -> DirectoryWatch | None:
        """A watch, or None where the system cannot give one (then: poll)."""
        try:
            return cls()
        except (OSError, AttributeError):
            return None

    def watch(self, directories: Iterable[str]) -> bool:
        """Watch these directories (again, if they were removed). True when every one of them
        is watched: a directory that does not exist yet cannot be."""
        complete = True
        for directory in directories:
            if directory in self._directories:
                continue
            try:
                self._directories[directory] = self._inotify.add_watch(directory, self._mask)
            except OSError:
                complete = False
        return complete

    def wait(self, timeout_s: float) -> bool:
        """Block until a change, an interrupt or the timeout. True when names changed (a file
        appeared, was renamed or removed), which calls for expanding the patterns again."""
        self._poller.poll(max(0, int(timeout_s * 1000)))
        with contextlib.suppress(BlockingIOError):
            os.read(self._interrupt_r, 64)
        names_changed = False
        try:
            events = self._inotify.read(timeout=0)
        except OSError:
            return True
        for event in events:
            if event.mask & self._names_mask:
                names_changed = True
            if event.mask & self._ignored:  # the directory itself went away
                for directory, descriptor in list(self._directories.items()):
                    if descriptor == event.wd:
                        del self._directories[directory]
                names_changed = True
        return names_changed

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._interrupt_w, b"x")

    def close(self) -> None:
        for descriptor in (self._interrupt_r, self._interrupt_w):
            with contextlib.suppress(OSError):
                os.close(descriptor)
        with contextlib.suppress(OSError):
            self._inotify.close()
