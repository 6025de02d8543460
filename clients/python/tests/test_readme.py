"""README.md's "Use it from an app" Python block, run as pasted: against a
fresh dev-mode node, with `localhost:8080` taken to that node's port, from
the repository root. It must print the candidate, then `hangup`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = os.environ.get("CAMSIG_BIN", str(ROOT / "target" / "debug" / "camsig"))


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Use it from an app"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMSIG__")}
    node = subprocess.Popen([BIN], env={**env, "CAMSIG__SERVER__BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < end, "the node never got ready"
            time.sleep(0.1)
        code = code.replace("localhost:8080", f"127.0.0.1:{port}")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines == ["candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host", "hangup"], out.stdout
        print("ok  README's Python block")
    finally:
        node.kill()
        node.wait()


if __name__ == "__main__":
    main()
