"""A webhook endpoint for the tests, run as its own process:

    python tests/webhook_receiver.py PORT LOG_FILE FAIL_RATE SEED

Echoes challenges (``/wrong`` echoes something else); answers other POSTs 500 with
probability FAIL_RATE, else 200; appends every request it answered to LOG_FILE as a JSON
line (path, headers, body, the status it answered), flushed before answering.
"""

from __future__ import annotations

import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_path, fail_rate, seed = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
chance = random.Random(seed)
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        message = json.loads(body)
        with lock:
            if message.get("type") == "webhook.challenge":
                status = 200
                answer = b"not the challenge" if self.path == "/wrong" else \
                    message["challenge"].encode()
            else:
                status = 500 if chance.random() < fail_rate else 200
                answer = b"ok" if status == 200 else b"try again"
            with open(log_path, "a") as log:
                log.write(json.dumps({"path": self.path, "headers": dict(self.headers),
                                      "body": body.decode(), "status": status}) + "\n")
        self.send_response(status)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
