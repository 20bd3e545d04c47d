"""A newcomer's whole journey, run as the README tells it, on the embedded default.

The README's commands are read from README.md itself and run as written (`make demo`,
the curl quote example, `manage.py create_api_key`, `settle --as-of`, `reconcile`), with
only the host, the ports and the data folder changed to this test's own; the rest of the
journey uses the HTTP API as docs/api.md describes it, with the demo's own keys and
logins. Nothing here reaches into the service's code or database: if the README or the
API drifts from what the service does, this fails.
"""

import base64
import http.cookiejar
import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orbit.reference_data import HUB_CODE as ORBIT_HUB
from orbit.reference_data import TLES
from tests.conftest import REPO, _free_port

README = (REPO / "README.md").read_text()
# What the README's commands say, and what this test puts in their place.
README_BASE = "http://127.0.0.1:8000"
README_STRIPE = "http://127.0.0.1:8420"
README_DATA_DIR = "var/"

START_TIMEOUT = 180  # a cold start migrates and seeds the national data: about a minute on 2 cores
STEP_TIMEOUT = 60  # a Celery task, a webhook, a command

# The journey's figures: an 8,000-card 910B pool in the Ningxia hub, priced flat at 72 yuan a card-hour
# (2 fen a card-second) in every tariff band, and a 6,000-card training lease whose first 10 seconds are billed.
HUB = "ningxia"
POOL_CARDS = 8000
PRICE = Decimal("72.0000")
CARDS = 6000
RUN_SECONDS = 10
SUBTOTAL = Decimal("1200.00")  # 6,000 cards x 10 s x 0.02 yuan
COVERAGE = Decimal("0.25")  # the voucher program pays a quarter of each eligible hour of usage
VOUCHER_FACE_VALUE = Decimal("1000.00")
SATELLITES = len(TLES)  # the constellation `make demo` lists (`manage.py seed_orbit`)
BILLING_ZONE = ZoneInfo("Asia/Shanghai")  # billing months are calendar months there


def _section(title: str) -> str:
    """The README's text under the heading ``title``, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", README + "\n#", flags=re.MULTILINE | re.DOTALL)
    assert match, f"the README has no section {title!r}"
    return match[1]


def _blocks(section: str) -> list[str]:
    """The indented code blocks of a README section, dedented."""
    blocks, current = [], []
    for line in section.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current and line.strip() == "" and current[-1].endswith("\\"):
            continue
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def _readme_line(section: str, containing: str) -> str:
    lines = [line for block in _blocks(_section(section)) for line in block.splitlines() if containing in line]
    assert lines, f"the README's section {section!r} has no command with {containing!r}"
    return lines[-1]


def test_the_readmes_two_commands_are_the_ones_the_makefile_and_ci_run() -> None:
    # given the README's "Two commands on a fresh machine"
    blocks = _blocks(_section("Two commands on a fresh machine"))

    # when its first and last commands are read
    demo, test = blocks[0], blocks[-1]

    # then they are `make demo` and `make test`: the Makefile starts the demo script, and CI runs the tests so
    assert (demo, test) == ("make demo", "make test")
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\tscripts/demo\.sh$", makefile, flags=re.MULTILINE)
    assert re.search(r"^test: .*\n\tscripts/test\.sh$", makefile, flags=re.MULTILINE)
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), flags=re.MULTILINE)


def test_make_install_demo_and_test_each_install_the_venv_and_the_pdfs_cjk_font() -> None:
    # given make's own reading of the Makefile (a prerequisite named by a variable set after its rule is empty)
    database = subprocess.run(
        ["make", "--print-data-base", "--question", "--no-builtin-rules", "install"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip

    # then install, demo and test each need the virtualenv's stamp and the CJK font the PDFs embed
    font = re.search(r"^CJK_FONT := (\S+)$", database, flags=re.MULTILINE)
    assert font, "the Makefile names the CJK font (CJK_FONT)"
    for target in ("install", "demo", "test"):
        rule = re.search(rf"^{target}: (.*)$", database, flags=re.MULTILINE)
        assert rule and set(rule.group(1).split()) >= {".venv/.installed", font.group(1)}, (target, rule)


class Demo:
    """The demo as a newcomer starts it: the README's command, in a data folder and on ports of its own."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port, self.stripe_port = _free_port(), _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stripe = f"http://127.0.0.1:{self.stripe_port}"
        # A newcomer's shell: no servers configured, the settings manage.py picks by default.
        unset = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTHON", "STRIPE_API_BASE"}
        self.env = {name: value for name, value in os.environ.items() if name not in unset}
        self.env.update({"DATA_DIR": str(data_dir), "PORT": str(self.port), "STRIPE_PORT": str(self.stripe_port)})
        self.log_path = data_dir / "demo.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.sessions: dict[str, urllib.request.OpenerDirector] = {}
        self.started = time.monotonic()

    # -- the demo's life -----------------------------------------------------------------

    def start(self) -> float:
        """Run the README's demo command and wait until it serves; the seconds it took."""
        command = _blocks(_section("Two commands on a fresh machine"))[0]
        self.sessions.clear()  # each start gives the demo's logins new passwords
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                shlex.split(command), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # only so that a failed test can still clean up everything it started
            )  # fmt: skip
        deadline = began + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"`{command}` exited {self.process.returncode}\n{self.tail()}"
            try:
                if self.call("GET", "/readyz")[0] == 200 and "==> serving on" in self.log_path.read_text():
                    return time.monotonic() - began
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"`{command}` did not serve within {START_TIMEOUT}s\n{self.tail()}")

    def processes(self) -> set[int]:
        """The demo's process and all its descendants, and the embedded PostgreSQL's postmaster."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" (", 1)
            except OSError:
                continue
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        found, todo = set(), [self.process.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.get(pid, []))
        postmaster = self.postmaster()
        return found | ({postmaster} if postmaster else set())

    def postmaster(self) -> int | None:
        """The pid of a PostgreSQL server running on the demo's data folder, if one is."""
        pgdata = (self.data_dir / "postgres").resolve()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            server = argv[0].endswith("/postgres") and "-D" in argv[:-1]
            if server and Path(argv[argv.index("-D") + 1]).resolve() == pgdata:
                return int(cmdline.parent.name)
        return None

    def stop(self) -> None:
        """``kill`` the demo's top process, as one would; a demo that does not stop is ended by force."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def force_stop(self) -> None:
        """After a failure: whatever is left of the demo, the database server included."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        if self.process is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        postmaster = self.postmaster()
        if postmaster:
            os.kill(postmaster, signal.SIGINT)  # PostgreSQL's fast shutdown

    def tail(self, characters: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- the demo's log, last {characters} characters ---\n{text[-characters:]}"

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """A step of the journey: said as it starts, and the demo's log shown if it fails."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {what}")  # noqa: T201  progress, shown on failure
        try:
            yield
        except BaseException:
            print(self.tail())  # noqa: T201
            raise

    # -- what a newcomer types -------------------------------------------------------------

    def keys(self) -> dict[str, str]:
        """The demo's API key of each kind, from the file the README names."""
        lines = (self.data_dir / "demo-keys.txt").read_text().splitlines()
        return {line.split()[0]: line.split()[2] for line in lines}

    def logins(self) -> dict[str, tuple[str, str]]:
        lines = (self.data_dir / "demo-keys.txt").read_text().splitlines()
        return {line.split()[0]: (line.split()[4], line.split()[5]) for line in lines}

    def readme_command(self, command: str) -> str:
        """A README command pointed at this demo: its host, ports and data folder."""
        return (
            command.replace(README_BASE, self.base)
            .replace(README_STRIPE, self.stripe)
            # `var/` where a path starts, not inside a word
            .replace(f" {README_DATA_DIR}", f" {self.data_dir}/")
        )

    def shell(self, command: str) -> str:
        """Run a README command in bash, from the checkout, as a newcomer would; its output."""
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.readme_command(command)], cwd=REPO, env=self.env,
            capture_output=True, text=True, timeout=STEP_TIMEOUT * 2,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}\nexited {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def call(
        self, method: str, path: str, key: str | None = None, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """An API request; the status and the JSON answer (an error's too)."""
        sent = dict(headers or {})
        if key:
            sent["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        return status, json.loads(raw) if raw and raw[:1] in b"{[" else raw

    def ok(self, method: str, path: str, key: str | None = None, body: Any = None, **kwargs: Any) -> Any:
        """An API request that must succeed; its JSON answer."""
        status, answer = self.call(method, path, key, body, **kwargs)
        assert 200 <= status < 300, f"{method} {path} answered {status}: {answer}"
        return answer

    def stripe_call(self, secret: str, path: str, form: dict[str, str] | None = None) -> Any:
        """A request to the demo's localstripe, as the README's curl makes it (``-u SECRET:``, form data)."""
        request = urllib.request.Request(
            self.stripe + path,
            data=urllib.parse.urlencode(form or {}).encode(),
            method="POST",
            headers={"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def signed_in(self, kind: str) -> urllib.request.OpenerDirector:
        """A browser-like session of the demo's login of ``kind``, signed in through the login form."""
        username, password = self.logins()[kind]
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        form = opener.open(f"{self.base}/dashboard/login/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        assert token, form[:500]
        body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token[1]})
        answer = opener.open(f"{self.base}/dashboard/login/", data=body.encode(), timeout=30)
        assert answer.url != f"{self.base}/dashboard/login/", f"the demo login of the {kind} was refused"
        return opener

    def page(self, kind: str, path: str = "") -> str:
        """A dashboard page as the demo's login of ``kind`` sees it; it must render."""
        username = self.logins()[kind][0]
        if kind not in self.sessions:
            self.sessions[kind] = self.signed_in(kind)
        with self.sessions[kind].open(f"{self.base}/dashboard/{username}/{path}", timeout=30) as response:
            assert response.status == 200, f"{kind}'s /dashboard/{username}/{path} answered {response.status}"
            return str(response.read().decode())


def until(condition: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """Poll ``condition`` until it returns something true; that value."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s (last seen: {value!r})")


def figure(html: str, within: str, name: str) -> str:
    """The ``data-figure`` called ``name`` inside the first element of a page that starts with ``within``
    (a table row, a hub's card, a list of figures, a heading) and has one."""
    for start in (match.end() for match in re.finditer(re.escape(within), html)):
        element = re.split(r"</tr>|</article>|</dl>|</h1>", html[start:], maxsplit=1)[0]
        match = re.search(rf'data-figure="{name}"([^>]*)>([^<]*)<', element)
        if match:
            value = re.search(r'data-value="([^"]*)"', match[1])
            return (value[1] if value else match[2]).strip()
    raise AssertionError(f"no {name} in an element that starts with {within}")


def to_month_end(now: datetime) -> timedelta:
    """How long the billing month of ``now`` has to run."""
    local = now.astimezone(BILLING_ZONE)
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1) - local


def voucher_share(usage: list[dict[str, Any]], valid_from: datetime) -> Decimal:
    """What the voucher pays of the journey's usage, by docs/architecture.md: its coverage of each hour of
    usage inside its validity, the hour the validity starts in prorated by the part of it the voucher was valid."""
    share = Decimal(0)
    for row in usage:
        hour = datetime.fromisoformat(row["period_start"])
        valid = min(max(hour + timedelta(hours=1) - valid_from, timedelta(0)), timedelta(hours=1))
        amount = Decimal(row["quantity"]) / 3600 * PRICE
        share += COVERAGE * amount * Decimal(valid // timedelta(microseconds=1)) / 3_600_000_000
    return share


def found(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text``, which must have it."""
    match = re.search(pattern, text, flags=re.DOTALL)
    assert match, f"{pattern!r} is not in:\n{text}"
    return match[1]


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie that nobody has reaped yet has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    stamp = subprocess.run(["make", "-q", "install"], cwd=REPO, capture_output=True, timeout=30)
    if stamp.returncode != 0:
        pytest.fail(
            "`make demo` would create .venv/ and install requirements-dev.txt first (minutes, on the network): "
            "run `make install` before this test"
        )
    started = Demo(tmp_path)
    try:
        yield started
    finally:
        started.force_stop()


def test_a_newcomers_journey_runs_on_the_embedded_default_as_the_readme_tells_it(demo: Demo) -> None:
    with demo.step("`make demo`, as the README says, with no servers"):
        seconds = demo.start()
        print(f"    serving after {seconds:.0f}s")  # noqa: T201
        assert (demo.data_dir / "postgres" / "PG_VERSION").read_text().strip() == "18"
        assert demo.ok("GET", "/readyz")["checks"] == {"database": "ok", "broker": "ok"}
        assert demo.call("GET", "/api/docs/")[0] == 200
        assert demo.call("GET", "/static/dashboards/vendor/chartjs/chart.umd.min.js")[0] == 200
        keys = demo.keys()
        assert set(keys) == {"operator", "provider", "buyer", "issuer"}
        hubs = {hub["code"] for hub in demo.ok("GET", "/api/v1/hubs/")["results"]}
        assert len(hubs) == 8 + 1 and ORBIT_HUB in hubs  # the national hubs and the demo's constellation

    with demo.step("the demo's logins open onto a working month: pools, leases, invoices, vouchers, credit"):
        grid_page, spend_page = demo.page("operator"), demo.page("buyer")
        assert 'data-section="orbit"' in grid_page and grid_page.count("<tr data-satellite=") == SATELLITES
        assert int(figure(grid_page, 'class="strip"', "overdue-count")) >= 1
        assert Decimal(figure(spend_page, "<dl", "spend-so-far")) > 0
        assert Decimal(figure(spend_page, "<dl", "bank-credit")) > 0
        assert 'data-state="overdue"' in spend_page
        seeded_program = demo.ok("GET", "/api/v1/voucher-programs/", keys["issuer"])["results"][0]
        assert Decimal(seeded_program["budget"]) > Decimal(seeded_program["budget_left"])
        assert Decimal(figure(demo.page("issuer", f"programs/{seeded_program['id']}/"), "<dl", "report-redeemed")) > 0
        provider_page = demo.page("provider")
        assert provider_page.count('data-figure="pool-cards"') >= 4 and "data-statement=" in provider_page
        (before,) = demo.ok("GET", "/api/v1/invoices/?status=draft", keys["buyer"])["results"]
        spent_before = Decimal(before["subtotal"])
        balance_before = Decimal(demo.ok("GET", "/api/v1/bank/", keys["buyer"])["balance"])

    with demo.step("the README's curl example: the west's offers and a quote for 16 910B cards"):
        example = next(block for block in _blocks(_section("Two commands on a fresh machine")) if "quotes/" in block)
        printed, answers = demo.shell(example).strip(), []
        while printed:  # curl -s prints each JSON answer, one after the other
            answer, end = json.JSONDecoder().raw_decode(printed)
            answers.append(answer)
            printed = printed[end:].strip()
        offers, quote = answers
        assert offers["count"] > 0 and {offer["region"] for offer in offers["results"]} == {"west"}, offers
        prices = [Decimal(offer["price_per_card_hour"]) for offer in offers["results"]]
        assert prices == sorted(prices), "ordering=price"
        assert quote["placements"], quote
        readme_order = json.loads(found(r"-d '(\{.*?\})'", example))
        assert readme_order["gpu_model"] == "910B"

    with demo.step("the operator looks at the grid; the issuer opens a voucher program for the demo buyer"):
        (hub,) = [hub for hub in demo.ok("GET", "/api/v1/hubs/")["results"] if hub["code"] == HUB]
        grid_before = demo.page("operator")
        pools_before = int(figure(grid_before, f'<article class="card" data-hub="{HUB}"', "hub-pools"))
        placed_before = int(figure(grid_before, f'<tr data-hub="{HUB}"', "placed-cards"))
        program = demo.ok(
            "POST", "/api/v1/voucher-programs/", keys["issuer"],
            {
                "name": "Zhejiang SME compute vouchers", "currency": "CNY", "budget": "100000.00",
                "coverage_share": str(COVERAGE), "per_company_yearly_cap": "5000.00",
                "valid_until": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
            },
            headers={"Idempotency-Key": "journey-program"},
        )  # fmt: skip
        assert demo.ok("POST", f"/api/v1/voucher-programs/{program['id']}/open/", keys["issuer"])["status"] == "open"
        voucher = demo.ok(
            "POST", f"/api/v1/voucher-programs/{program['id']}/vouchers/", keys["issuer"],
            {"organization": "hz-vision", "face_value": str(VOUCHER_FACE_VALUE)},
            headers={"Idempotency-Key": "journey-voucher"},
        )  # fmt: skip
        assert voucher["status"] == "active" and voucher["organization"] == "hz-vision"

    with demo.step(f"the provider registers a 910B pool in {HUB} and the operator approves it"):
        pool = demo.ok(
            "POST", "/api/v1/pools/", keys["provider"],
            {
                "name": "West Cloud 910B journey", "hub": HUB, "province": "Ningxia",
                "gpu_model": "910B", "cards": POOL_CARDS, "price_per_card_hour": str(PRICE),
                # the same price in every tariff band, so that the bill does not depend on the hour of the test
                "time_of_use": {band["band"]: "1" for band in hub["electricity"]["bands"]},
                "pue": "1.20", "green_share": "0.800",
            },
        )  # fmt: skip
        assert pool["status"] == "pending"
        approved = demo.ok("POST", f"/api/v1/pools/{pool['id']}/approve/", keys["operator"], {"reason": "checked"})
        assert approved["status"] == "active"

    with demo.step("the provider's agent gets a key of its own (`manage.py create_api_key`) and sends heartbeats"):
        line = _readme_line("Getting an API key", "create_api_key")
        agent_key = demo.shell(line.replace("--org acme", "--org west-cloud")).strip().splitlines()[-1]
        assert agent_key.startswith("cg_")
        observed = datetime.now(UTC).replace(microsecond=0)
        beat = demo.ok(
            "POST", f"/api/v1/pools/{pool['id']}/heartbeat/", agent_key,
            {"healthy_cards": POOL_CARDS, "observed_at": observed.isoformat()},
        )  # fmt: skip
        assert beat["stale"] is False and datetime.fromisoformat(beat["last_heartbeat_at"]) >= observed

    with demo.step("the buyer finds the pool among the offers, gets a quote and orders"):
        offers = demo.ok("GET", "/api/v1/offers/?gpu_model=910B&ordering=price", keys["buyer"])["results"]
        (offer,) = [offer for offer in offers if offer["pool"] == pool["id"]]
        assert (offer["provider"], Decimal(offer["price_per_card_hour"])) == ("west-cloud", PRICE)
        # The README's order (a 910B training run), for 6,000 cards, on the offer the buyer chose.
        order_body = {**readme_order, "cards": CARDS, "pool": offer["pool"]}
        left = to_month_end(datetime.now(UTC))
        if left < timedelta(minutes=1):  # so that the lease's seconds are billed in one month, on one invoice
            time.sleep(left.total_seconds() + 1)
        (placement,) = demo.ok("POST", "/api/v1/quotes/", keys["buyer"], order_body)["placements"]
        assert placement["pool"] == pool["id"]
        assert Decimal(placement["estimated_cost_after_vouchers"]) < Decimal(placement["estimated_cost"])
        order = demo.ok(
            "POST", "/api/v1/orders/", keys["buyer"], order_body, headers={"Idempotency-Key": "journey-order"}
        )
        (lease,) = order["leases"]
        assert (lease["pool"], lease["cards"], lease["status"]) == (pool["id"], CARDS, "scheduled")

    with demo.step("the provider starts the lease at its booked start"):
        status, started = demo.call("POST", f"/api/v1/leases/{lease['id']}/start/", keys["provider"])
        if status == 409 and started["error"]["code"] == "lease_not_scheduled":
            # Celery beat starts a scheduled lease at its booked start too, and was a moment quicker.
            status, started = demo.call("GET", f"/api/v1/leases/{lease['id']}/", keys["provider"])
        assert (status, started["status"]) == (200, "running"), started
        start = datetime.fromisoformat(started["started_at"])

    with demo.step("the buyer tops up its compute bank on localstripe, as the README shows; the webhook credits it"):
        steps = "\n".join(_blocks(_section("The compute bank")))
        amount = json.loads(found(r"""-d '(\{"amount": [^']*\})'""", steps))
        secret = found(r"-u (sk_test_\w+):", steps)
        card = dict(field.split("=") for field in re.findall(r'-d "(card\[\w+\]=\d+)"', steps))
        assert "/v1/payment_methods -d type=card" in steps
        assert "/v1/payment_intents/$PI -d payment_method=$PM" in steps
        assert "-X POST http://127.0.0.1:8420/v1/payment_intents/$PI/confirm" in steps
        top_up = demo.ok("POST", "/api/v1/bank/top-ups/", keys["buyer"], amount)
        method = demo.stripe_call(secret, "/v1/payment_methods", {"type": "card", **card})
        demo.stripe_call(secret, f"/v1/payment_intents/{top_up['payment_intent']}", {"payment_method": method["id"]})
        confirmed = demo.stripe_call(secret, f"/v1/payment_intents/{top_up['payment_intent']}/confirm")
        assert confirmed["status"] == "succeeded"
        until(
            lambda: demo.ok("GET", f"/api/v1/bank/top-ups/{top_up['id']}/", keys["buyer"])["status"] == "succeeded",
            "the payment_intent.succeeded webhook",
        )
        bank = demo.ok("GET", "/api/v1/bank/", keys["buyer"])
        assert Decimal(bank["balance"]) == balance_before + Decimal(amount["amount"]) == balance_before + 500, bank
        bank_credit = Decimal(bank["balance"])

    with demo.step(f"the provider's agent posts the lease's first {RUN_SECONDS} seconds as CloudEvents"):
        # One event per second of the 6,000 cards, dated when that second ended and sent once it has;
        # each id is stable, so a resend is a duplicate.
        until(lambda: datetime.now(UTC) > start + timedelta(seconds=RUN_SECONDS + 1), "the lease's run", 60)
        events = [
            {
                "specversion": "1.0", "type": "compute.gpu_seconds", "source": "agent://west-cloud/journey",
                "id": f"{lease['id']}:{second}", "subject": lease["id"],
                "time": (start + timedelta(seconds=second)).isoformat(), "data": {"quantity": CARDS, "cards": CARDS},
            }
            for second in range(1, RUN_SECONDS + 1)
        ]  # fmt: skip
        headers = {"Content-Type": "application/cloudevents-batch+json"}
        sent = demo.ok("POST", "/api/v1/usage-events/", agent_key, events, headers=headers)
        assert sent == {"accepted": RUN_SECONDS, "duplicates": 0, "rejected": 0, "errors": []}
        assert demo.ok("POST", "/api/v1/usage-events/", agent_key, events, headers=headers)["duplicates"] == RUN_SECONDS

    with demo.step("the usage appears to the buyer, rolled up by the demo's Celery worker"):

        def card_seconds() -> Decimal:
            rows = demo.ok("GET", f"/api/v1/usage/?lease={lease['id']}", keys["buyer"])
            return sum((Decimal(row["quantity"]) for row in rows if row["metric"] == "gpu_seconds"), Decimal(0))

        until(lambda: card_seconds() == CARDS * RUN_SECONDS, "the usage rolled up")
        (draft,) = demo.ok("GET", "/api/v1/invoices/?status=draft", keys["buyer"])["results"]
        assert Decimal(draft["subtotal"]) == spent_before + SUBTOTAL, f"the draft rates the usage so far: {draft}"
        assert Decimal(demo.ok("GET", "/api/v1/bank/", keys["buyer"])["pending_usage"]) == spent_before + SUBTOTAL
        ended = demo.ok("POST", f"/api/v1/leases/{lease['id']}/terminate/", keys["buyer"])
        assert (ended["status"], ended["end_reason"]) == ("completed", "terminated_by_buyer")

    with demo.step("the month is settled with the README's `manage.py settle --as-of`"):
        settled = demo.shell(_readme_line("Settling a month", 'settle --as-of "$(date'))
        print("    " + settled.replace("\n", "\n    "))  # noqa: T201
        assert "no_payment_method" in settled, "the demo buyer has no card on file yet"
        invoice = demo.ok("GET", f"/api/v1/invoices/{draft['id']}/", keys["buyer"])

    with demo.step("the invoice is paid by the voucher, then the bank credit; the buyer pays the rest by card"):
        # The journey's lines, beside those of the demo buyer's own leases this month
        lines = [line for line in invoice["lines"] if line["pool"] == pool["id"]]
        assert invoice["status"] == "finalized" and invoice["number"], invoice
        assert sum(Decimal(line["amount"]) for line in invoice["lines"]) == Decimal(invoice["subtotal"])
        assert Decimal(invoice["subtotal"]) == spent_before + SUBTOTAL, invoice
        assert sum(Decimal(line["amount"]) for line in lines) == SUBTOTAL, invoice
        assert {(line["unit"], Decimal(line["rate"])) for line in lines} == {("card_hour", PRICE)}
        for line in lines:
            assert Decimal(line["amount"]) == (Decimal(line["quantity"]) * Decimal(line["rate"])).quantize(
                Decimal("0.01")
            )
        assert sum(Decimal(line["voucher_amount"]) for line in invoice["lines"]) == Decimal(invoice["voucher_credit"])
        usage = demo.ok("GET", f"/api/v1/usage/?lease={lease['id']}", keys["buyer"])
        # The demo's voucher pays for inference only: the journey's training is the journey voucher's
        voucher_paid = sum(Decimal(line["voucher_amount"]) for line in lines)
        expected = voucher_share(usage, datetime.fromisoformat(voucher["valid_from"]))
        assert voucher_paid > 0 and abs(voucher_paid - expected) <= Decimal("0.02"), (voucher_paid, expected)
        assert Decimal(invoice["bank_credit"]) == bank_credit
        card_part = Decimal(invoice["subtotal"]) - Decimal(invoice["voucher_credit"]) - bank_credit
        paid_by = f"journey voucher {voucher_paid} (by the rule {expected:.4f}), bank {bank_credit}, card {card_part}"
        print(f"    {invoice['subtotal']}: {paid_by}")  # noqa: T201
        assert Decimal(invoice["amount_due"]) == card_part > 0
        assert Decimal(invoice["amount_paid"]) == 0
        method = demo.stripe_call(secret, "/v1/payment_methods", {"type": "card", **card})
        paid = demo.ok(
            "POST", f"/api/v1/invoices/{invoice['id']}/pay/", keys["buyer"], {"payment_method": method["id"]},
            headers={"Idempotency-Key": "journey-pay"},
        )  # fmt: skip
        assert (paid["status"], Decimal(paid["amount_paid"])) == ("paid", card_part), paid
        voucher = demo.ok("GET", f"/api/v1/vouchers/{voucher['id']}/", keys["buyer"])
        assert Decimal(voucher["remaining"]) == VOUCHER_FACE_VALUE - voucher_paid
        assert [(r["invoice"], Decimal(r["amount"])) for r in voucher["redemptions"]] == [(invoice["id"], voucher_paid)]
        draws = demo.ok("GET", "/api/v1/bank/transactions/?page_size=500", keys["buyer"])["results"]
        assert sum(Decimal(t["amount"]) for t in draws if t["reference"] == f"invoice:{invoice['id']}") == -bank_credit
        assert demo.ok("GET", "/api/v1/bank/", keys["buyer"])["balance"] == "0.00"
        statements = demo.ok("GET", "/api/v1/statements/", keys["provider"])["results"]
        (statement,) = [s for s in statements if s["period_start"] == invoice["period_start"]]
        assert Decimal(statement["gross"]) == Decimal(invoice["subtotal"])  # the demo provider's pools only

    with demo.step("`manage.py reconcile`: the books reconcile"):
        # The operating commands are listed as `manage.py NAME`, run with the virtualenv's Python as elsewhere.
        command = " ".join(_readme_line("Operating commands", "manage.py reconcile").split()[:2])
        assert "The books reconcile" in demo.shell(f".venv/bin/python {command}")

    with demo.step("each dashboard renders and shows the new pool, lease, program and invoice"):
        grid = demo.page("operator")
        assert int(figure(grid, f'<article class="card" data-hub="{HUB}"', "hub-pools")) == pools_before + 1
        assert int(figure(grid, f'<tr data-hub="{HUB}"', "placed-cards")) == placed_before + CARDS
        printed = demo.page("operator", f"invoices/{invoice['id']}/")
        assert figure(printed, "<h1>", "invoice-number") == invoice["number"]
        assert figure(printed, "<dl", "invoice-status") == "paid"
        spend = demo.page("buyer")
        assert figure(spend, f'<tr data-invoice="{invoice["id"]}"', "invoice-amount-paid") == str(card_part)
        assert invoice["number"] in spend
        assert figure(demo.page("buyer", f"invoices/{invoice['id']}/"), "<h1>", "invoice-number") == invoice["number"]
        programs = demo.page("issuer")
        assert f'data-program="{program["id"]}"' in programs
        report = demo.page("issuer", f"programs/{program['id']}/")
        assert figure(report, "<dl", "report-redeemed") == str(voucher_paid)
        pools = demo.page("provider")
        assert figure(pools, f'<tr data-pool="{pool["id"]}"', "pool-cards") == str(POOL_CARDS)
        assert int(figure(pools, f'<tr data-pool="{pool["id"]}"', "pool-heartbeats")) >= 1
        assert figure(pools, f'<tr data-statement="{statement["id"]}"', "statement-gross") == statement["gross"]

    with demo.step("`kill` of the demo's top process stops every process it started and the database"):
        running = demo.processes()
        assert demo.postmaster() in running and len(running) > 5, running
        demo.stop()
        until(lambda: not {pid for pid in running if alive(pid)}, f"every process of the demo ({running}) gone", 30)
        assert demo.postmaster() is None
        assert not (demo.data_dir / "postgres" / "postmaster.pid").exists()

    with demo.step("a second `make demo` on the same data folder keeps the pool and the paid invoice"):
        print(f"    serving again after {demo.start():.0f}s")  # noqa: T201
        keys = demo.keys()
        kept = {row["id"]: row["status"] for row in demo.ok("GET", "/api/v1/pools/", keys["provider"])["results"]}
        assert kept[pool["id"]] == "active" and len(kept) == 1 + 4  # the journey's pool and the demo's
        again = demo.ok("GET", f"/api/v1/invoices/{invoice['id']}/", keys["buyer"])
        assert (again["number"], again["status"]) == (invoice["number"], "paid")
        assert demo.page("operator").count("<tr data-satellite=") == SATELLITES  # listed once, not again
        demo.stop()
        until(lambda: demo.postmaster() is None, "the embedded PostgreSQL stopped again", 30)
