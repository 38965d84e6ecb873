"""A per-thread stack of overrides: the mechanism behind ``with use_...(name):`` contexts."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional


class OverrideStack:
    """``push(value)`` is a context manager; ``top()`` is the innermost value in this thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def push(self, value: str) -> Iterator[None]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(value)
        try:
            yield
        finally:
            stack.pop()

    def top(self) -> Optional[str]:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else None
