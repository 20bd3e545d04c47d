"""The demo's localstripe, with its state in DATA_DIR instead of the machine-wide /tmp/localstripe.pickle.

localstripe saves its whole store to /tmp/localstripe.pickle after every change and loads that file
when it starts: one file for every localstripe on the machine (the tests start their own). A demo
would start with the store of whichever localstripe wrote last, or not start at all if one was
writing at that moment (a truncated pickle). This runs the same server, `localstripe --port N`, with
the file under DATA_DIR and replaced whole on each change, so that a restarted demo gets back its own
customers, cards and payments, and nothing else.
"""

import os
import pickle
from pathlib import Path

import localstripe.resources as resources
import localstripe.server as server

STATE = Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / "var") / "localstripe.pickle"


def _load(store: dict[str, object]) -> None:
    try:
        with STATE.open("rb") as file:
            saved = pickle.load(file)  # noqa: S301  the demo's own localstripe wrote it, below
    except FileNotFoundError:
        return
    store.clear()
    store.update(saved)


def _save(store: dict[str, object]) -> None:
    partial = STATE.with_name(STATE.name + ".partial")
    with partial.open("wb") as file:
        pickle.dump(store, file, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(STATE)


if __name__ == "__main__":
    STATE.parent.mkdir(parents=True, exist_ok=True)
    resources.Store.try_load_from_disk = _load
    resources.Store.dump_to_disk = _save
    server.start()
