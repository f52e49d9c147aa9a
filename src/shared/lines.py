"""JSON messages, one per line, read from a pipe's file descriptor with a buffer of their own: `select` sees
only bytes not read yet, so lines that came in one read wait here, never in a stream's hidden buffer. Both
ends of the template's pipes use it (`src/child/template.py` for requests, `src/parent/launch.py` for
replies)."""

from __future__ import annotations

import json
import os
import select

ENDED: dict = {}  # what `next` returns once the writer has closed its end


class Lines:
    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def next(self, wait_s: float | None) -> dict | None:
        """The next message (one already read is returned at once); None if none came within `wait_s`
        (None: wait as long as it takes); `ENDED` when the input has ended."""
        if b"\n" not in self.buffer:
            if not select.select([self.fd], [], [], wait_s)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return ENDED
            self.buffer += chunk
            if b"\n" not in self.buffer:
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)
