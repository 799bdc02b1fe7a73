"""A bounded send loop for the kill -9 scenario: which sends did openbloo accept (202), by message id?

Worker threads send single texts (each with its own ``Idempotency-Key``) to 10,000 chats over keep-alive
connections to 127.0.0.1, keep the ``message_id`` of every 202, and count everything else. While the
server is down, connection errors are counted and retried after a short pause on a fresh connection. The
loop stops after ``seconds``. A request in flight when the server dies gets no answer, so it is no
promise: if its message exists anyway it is reported as "unacked", never as lost or duplicated.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ProbeResult:
    accepted: list[str] = field(default_factory=list)
    sent: int = 0
    non2xx: int = 0
    conn_errors: int = 0
    timeouts: int = 0
    ok_per_s: list[int] = field(default_factory=list)


def run_probe(port: int, api_key: str, *, seconds: float, workers: int = 16, prefix: str = "k") -> ProbeResult:
    result = ProbeResult(ok_per_s=[0] * (int(seconds) + 2))
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def worker(wid: int) -> None:
        rnd = random.Random(wid)
        conn: http.client.HTTPConnection | None = None
        seq = 0
        while time.monotonic() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            seq += 1
            key = f"{prefix}{wid}x{seq}"
            n = rnd.randrange(10_000)
            path = f"/v2/api/chats/%2B15557{n // 3000:02d}{1000 + n % 3000:04d}/messages"
            body = json.dumps({"text": key})
            try:
                conn.request("POST", path, body=body, headers={**headers, "Idempotency-Key": key})
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:
                with lock:
                    result.timeouts += 1
                conn.close()
                conn = None
                continue
            except (OSError, http.client.HTTPException):
                with lock:
                    result.conn_errors += 1
                conn.close()
                conn = None
                time.sleep(0.05)
                continue
            with lock:
                result.sent += 1
                if resp.status == 202:
                    result.accepted.append(json.loads(data)["message_id"])
                    result.ok_per_s[min(len(result.ok_per_s) - 1, int(time.monotonic() - start))] += 1
                else:
                    result.non2xx += 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return result
