"""A loopback OpenAI-compatible API for tests: ``/v1/models`` and ``/v1/chat/completions``.

Subclass and override :meth:`FakeOpenAI.answer` to decide each chat reply; the server handles
HTTP, the bearer key, request bookkeeping and the response envelope. An answer of :class:`Raw`
is sent as it is instead (an HTML page from a proxy, a JSON body of the wrong shape...).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Raw:
    """A chat reply sent verbatim with HTTP 200: ``body`` under ``content_type``."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    drip: float = 0.0  # > 0: send the body one byte at a time, this many seconds apart


class FakeOpenAI:
    """A threaded server on 127.0.0.1 speaking just enough of the OpenAI chat API.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1``, what the client is given.
        chats: every authorised chat request, in arrival order.
        in_flight, max_in_flight: concurrent chat requests now and at most.
        models: answer ``/v1/models`` (``False``: 404, like servers without that route).
        models_body: a :class:`Raw` body to send for ``/v1/models`` instead.
        reject_json_mode: answer 400 to ``response_format``, like some local servers.
    """

    def __init__(self, key: str, *, models: bool = True, delay: float = 0.0):
        self.key, self.models, self.delay = key, models, delay
        self.reject_json_mode = False
        self.models_body: Raw | None = None  # sent for /v1/models instead of the model list
        self.chats: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "5")  # keeps the client's retries fast
                self.end_headers()
                self.wfile.write(data)

            def authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {fake.key}":
                    return True
                self.reply(401, {"error": {"message": "Incorrect API key provided"}})
                return False

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if not self.authorised():
                    return
                if self.path == "/v1/models" and fake.models_body is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", fake.models_body.content_type)
                    self.send_header("Content-Length", str(len(fake.models_body.body)))
                    self.end_headers()
                    self.wfile.write(fake.models_body.body)
                elif self.path == "/v1/models" and fake.models:
                    self.reply(200, {"object": "list", "data": [{"id": "tiny-chef", "object": "model"}]})
                else:
                    self.reply(404, {"error": {"message": "not found"}})

            def do_POST(self):  # noqa: N802
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.authorised():
                    return
                if fake.reject_json_mode and "response_format" in request:
                    self.reply(400, {"error": {"message": "response_format is not supported"}})
                    return
                with fake.lock:
                    fake.chats.append(request)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    threading.Event().wait(fake.delay)
                    status, content = fake.answer(request)
                    if isinstance(content, Raw):
                        self.send_response(status)
                        self.send_header("Content-Type", content.content_type)
                        self.send_header("Content-Length", str(len(content.body)))
                        self.end_headers()
                        if not content.drip:
                            self.wfile.write(content.body)
                            return
                        for byte in content.body:  # a server (or proxy) that drips its answer
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            threading.Event().wait(content.drip)
                        return
                    if status != 200:
                        self.reply(status, {"error": {"message": f"boom {status}"}})
                        return
                    self.reply(200, {
                        "id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                    })
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request: dict) -> tuple[int, str | Raw]:
        """``(HTTP status, message content or Raw body)`` for one chat request (already in ``chats``)."""
        return 200, "OK"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
