"""A webhook receiver for the monitor tests: accepts POSTs on 127.0.0.1, appends one JSON line
per request (the Idempotency-Key header, the Authorization header's presence, the body) to a
log file, and answers 200 (or 503 while a file named FAIL exists beside the log).

While a file named HOLD exists beside the log, a request is accepted but not read: the
listener writes HELD beside the log and waits until HOLD is removed, then drops the request
without recording it (a sender killed meanwhile never had it received).

    python webhook_listener.py PORT LOG
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, LOG = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        here = os.path.dirname(LOG)
        if os.path.exists(os.path.join(here, "HOLD")):
            open(os.path.join(here, "HELD"), "w").close()
            while os.path.exists(os.path.join(here, "HOLD")):
                time.sleep(0.05)
            self.close_connection = True
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if os.path.exists(os.path.join(os.path.dirname(LOG), "FAIL")):
            self.send_response(503)
            self.end_headers()
            return
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({
                "key": self.headers.get("Idempotency-Key"),
                "authorized": self.headers.get("Authorization") == "Bearer s3cret",
                "body": json.loads(body),
            }) + "\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
