"""The chaos harness's sample app: ``python chaos_app.py HOST PORT NAME`` answers every GET with
``NAME`` (200), ``/health`` included. Threaded, quiet, nothing else."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chaos-app"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"{NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


NAME = sys.argv[3] if len(sys.argv) > 3 else "app"

if __name__ == "__main__":
    server = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
    server.daemon_threads = True
    server.serve_forever()
