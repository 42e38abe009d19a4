"""Container health check: the process's /healthz answers 200 (VISREC_WEB_PORT, default 6066).

Exit 0 when healthy, 1 otherwise. Standard library only: it runs every few seconds.
"""

import os
import sys
import urllib.request

port = os.environ.get("VISREC_WEB_PORT") or "6066"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError as exc:
    print(f"/healthz on port {port}: {exc}", file=sys.stderr)
    sys.exit(1)
