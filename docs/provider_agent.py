"""A provider's usage agent: read card usage, post CloudEvents batches to Compute Grid.

    COMPUTE_GRID_URL=http://127.0.0.1:8000 COMPUTE_GRID_KEY=cg_... \\
        python docs/provider_agent.py --lease <lease id> --cards 8 --interval 60

Every minute it reports the card-seconds each lease used in that minute as a
``compute.gpu_seconds`` event. Sending is safe to retry: each event's ``id`` is
derived from the lease and the minute it covers, so a batch re-sent after a
timeout is counted as duplicates, never billed twice. Unsent events are kept
and retried with exponential backoff and jitter.

Here the counters are simulated; a real agent reads them from NVML / DCGM (or
``npu-smi`` for Ascend cards). Uses the official ``cloudevents`` SDK and the
standard library only.
"""

import argparse
import json
import os
import random
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from cloudevents.v1.conversion import to_dict
from cloudevents.v1.http import CloudEvent

BATCH_SIZE = 5_000
MAX_BACKOFF_SECONDS = 300


def read_card_seconds(cards: int, interval: int) -> float:
    """Card-seconds busy in the last interval. Replace with NVML / DCGM counters."""
    busy_cards = random.randint(max(cards - 1, 0), cards)  # noqa: S311 - a simulation
    return float(busy_cards * interval)


def usage_event(*, source: str, lease: str, cards: int, minute: datetime, card_seconds: float) -> CloudEvent:
    attributes = {
        "type": "compute.gpu_seconds",
        "source": source,
        # Stable per lease and minute: a retry re-sends the same id and is deduplicated.
        "id": f"{lease}:{minute:%Y%m%dT%H%M}",
        "subject": lease,
        "time": minute.isoformat(),
    }
    return CloudEvent(attributes, {"quantity": card_seconds, "cards": cards})


def post_batch(url: str, key: str, events: list[CloudEvent]) -> dict:
    body = json.dumps([to_dict(event) for event in events]).encode()
    request = urllib.request.Request(  # noqa: S310 - the operator's URL
        f"{url}/api/v1/usage-events/",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the operator's URL
        return json.load(response)


def send_with_retries(url: str, key: str, events: list[CloudEvent]) -> dict:
    """Retry network errors, 429 and 5xx with backoff; give up on other 4xx (a bug to fix, not to retry)."""
    attempt = 0
    while True:
        try:
            return post_batch(url, key, events)
        except urllib.error.HTTPError as exc:
            if exc.code != 429 and exc.code < 500:
                raise
        except (urllib.error.URLError, TimeoutError):
            pass
        delay = min(MAX_BACKOFF_SECONDS, 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
        print(f"send failed; retrying in {delay:.1f}s")  # noqa: T201
        time.sleep(delay)
        attempt += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease", action="append", required=True, help="Lease id (repeat for several).")
    parser.add_argument("--cards", type=int, required=True, help="Cards of each lease.")
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--source", default=f"agent://{os.uname().nodename}")
    parser.add_argument("--once", action="store_true", help="Report one interval and exit.")
    args = parser.parse_args()
    url, key = os.environ["COMPUTE_GRID_URL"].rstrip("/"), os.environ["COMPUTE_GRID_KEY"]

    pending: list[CloudEvent] = []
    while True:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        for lease in args.lease:
            seconds = read_card_seconds(args.cards, args.interval)
            pending.append(
                usage_event(source=args.source, lease=lease, cards=args.cards, minute=minute, card_seconds=seconds)
            )
        while pending:
            batch, pending = pending[:BATCH_SIZE], pending[BATCH_SIZE:]
            answer = send_with_retries(url, key, batch)
            print(f"accepted {answer['accepted']}, duplicates {answer['duplicates']}, rejected {answer['rejected']}")  # noqa: T201
            for error in answer["errors"]:
                print(f"  rejected {error['id']}: {error['code']}: {error['message']}")  # noqa: T201
        if args.once:
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
