"""A loopback stand-in for the Hugging Face Hub API: the calls that huggingface_hub's ``create_repo``
and ``upload_folder`` make (create, validate-yaml, preupload, commit), recording what they sent.

Every file is answered ``uploadMode: regular``, so its bytes arrive base64-encoded in the commit
request and the test can compare them with the run's files.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hub:
    """Start a server on 127.0.0.1; ``url`` is its endpoint."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.repos: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, obj: dict):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append(("POST", self.path))
                hub.auth.append(self.headers.get("Authorization"))
                if self.path == "/api/repos/create":
                    request = json.loads(data)
                    repo_id = f"{request.get('organization')}/{request['name']}"
                    hub.repos[repo_id] = request
                    return self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if self.path == "/api/validate-yaml":
                    return self._send(200, {"errors": [], "warnings": []})
                if "/preupload/" in self.path:
                    files = json.loads(data)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                      for f in files]})
                if "/commit/" in self.path:
                    for line in data.decode().splitlines():
                        operation = json.loads(line)
                        if operation["key"] == "file":
                            hub.files[operation["value"]["path"]] = base64.b64decode(operation["value"]["content"])
                    repo_id = self.path.split("/api/models/")[1].split("/commit/")[0]
                    return self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{'a' * 40}",
                                            "commitOid": "a" * 40, "success": True})
                return self._send(404, {"error": f"unknown {self.path}"})

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._send(404, {"error": f"unknown {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
