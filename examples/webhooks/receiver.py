"""A camsig webhook receiver: checks Camsig-Signature, prints each webhook once.
Usage: python3 receiver.py PORT SECRET  (stdlib only)"""
import hashlib, hmac, json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, SECRET, seen = int(sys.argv[1]), sys.argv[2].encode(), set()

class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sig = dict(p.split("=", 1) for p in self.headers.get("Camsig-Signature", "").split(",") if "=" in p)
        want = hmac.new(SECRET, sig.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = sig.get("t", "").isdigit() and abs(time.time() - int(sig["t"])) < 300
        if not (fresh and hmac.compare_digest(want, sig.get("v1", ""))):
            return self.answer(401)  # not from camsig, or replayed later
        hook = json.loads(body)
        if hook["id"] not in seen:  # at least once: a repeat has the same id
            seen.add(hook["id"])
            print(hook["type"], json.dumps(hook["data"], sort_keys=True), flush=True)
        self.answer(204)

    def answer(self, status):
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
