"""An overall time limit for one HTTP request of the LLM client.

httpx (under the openai client) has only per-operation timeouts: a server that sends a few bytes
every half second keeps a request alive forever. :func:`deadline_transport` gives each attempt a
total budget, checked as the answer streams in; past it the read fails with ``ReadTimeout``, which
the openai client retries like any timeout and then reports, so one caption fails and the job goes
on. Written by hand: httpx has no total-time option (its docs suggest wrapping the transport).
"""

from __future__ import annotations

import importlib
import time


def openai_http_module():
    """The httpx package the installed openai client is built on (``httpx``, or ``httpx2`` for
    openai >= 3): the transport must come from the same one."""
    import openai

    base = openai.DefaultHttpxClient.__mro__[1]  # httpx.Client or httpx2.Client
    return importlib.import_module(base.__module__.partition(".")[0])


def deadline_transport(seconds: float, http=None):
    """An ``HTTPTransport`` of ``http`` (default: openai's) whose every request must be answered
    whole within ``seconds``."""
    http = http or openai_http_module()

    class DeadlineStream(http.SyncByteStream):
        def __init__(self, stream, deadline: float, request):
            self.stream, self.deadline, self.request = stream, deadline, request

        def __iter__(self):
            for chunk in self.stream:
                if time.monotonic() > self.deadline:
                    raise http.ReadTimeout(f"the answer took over {seconds:g} s in all", request=self.request)
                yield chunk

        def close(self) -> None:
            self.stream.close()

    class DeadlineTransport(http.BaseTransport):
        def __init__(self):
            self.inner = http.HTTPTransport()

        def handle_request(self, request):
            deadline = time.monotonic() + seconds
            response = self.inner.handle_request(request)
            response.stream = DeadlineStream(response.stream, deadline, request)
            return response

        def close(self) -> None:
            self.inner.close()

    return DeadlineTransport()
