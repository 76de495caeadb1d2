"""Container health check: GET /healthz on the gateway's own listener, exit 0 when it answers 200.

Used by the Dockerfile's HEALTHCHECK (docker and podman run it inside the
container, so the address is loopback). ``GATEWAY_HEALTH_URL`` names the URL; an
https:// URL is checked without certificate verification, because the question
is "is the process serving", not "is the certificate right" (the
GatewayCertificateExpiringSoon alert covers that).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

#: Docker's HEALTHCHECK --timeout is 5 s; answer before it kills the probe.
TIMEOUT_SECONDS = 4.0
DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def main() -> int:
    """Probe the health URL once; 0 when healthy, 1 otherwise (Docker's convention)."""
    url = os.environ.get("GATEWAY_HEALTH_URL", DEFAULT_URL)
    if not url.startswith(("http://", "https://")):
        print(f"healthcheck: GATEWAY_HEALTH_URL must be http(s)://, not {url!r}", file=sys.stderr)
        return 1
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310 - scheme checked above
            healthy = response.status == 200
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
