"""The web page at ``/``, walked through by a person in a real browser.

Debian's headless Chromium, driven by Selenium through Debian's chromedriver (its path given
explicitly, so Selenium Manager never downloads anything), against a stack of two replicas and a
persister. Every wait is on a condition of the page (WebDriverWait), never a sleep. A failing browser
test saves a screenshot, the page's DOM and the browser's console to a folder named in the failure.

Without Chromium the browser tests skip, except in CI (``CI`` set) or under
``PM_REQUIRE_REAL_SERVICES=1`` (``make suite``), where a missing browser fails them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.api import Api, Stack, StackFactory, User, dec, fmt, unique

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "api" / "web"
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE_BROWSER = os.environ.get("PM_REQUIRE_REAL_SERVICES") == "1" or bool(os.environ.get("CI"))
#: Where the README's screenshot comes from: set it (e.g. to docs/web-page.png) and run this module.
SCREENSHOT_TO = os.environ.get("WEB_PAGE_SCREENSHOT")
WAIT_S = 20.0
#: Narrower than this, a headless window is emulated as a phone's screen.
MIN_WINDOW_WIDTH = 500
HOSTILE = "<img src=x onerror=alert(1)>"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")



# --------------------------------------------------------------------------- the stack and the browser

@pytest.fixture(scope="module")
def web_stack(stacks: StackFactory) -> Stack:
    """Two replicas and a persister of their own (the page reads the trade history from PostgreSQL)."""
    return stacks.start("web", replicas=2)


@pytest.fixture(scope="module")
def web_api(web_stack: Stack) -> Iterator[Api]:
    client = Api(web_stack)
    yield client
    client.close()


def _browser_missing() -> str | None:
    if CHROMIUM is None:
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not CHROMEDRIVER.is_file():
        return f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)"
    return None


class Browser:
    """A headless Chromium with its console and network logged, and helpers that read the page by JS
    (the page re-renders rows as prices move, so element handles go stale; a query does not)."""

    def __init__(self, artifacts: Path, width: int, height: int) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--no-first-run", "--disable-extensions", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--disable-default-apps",
                         f"--window-size={width},{height}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        if width < MIN_WINDOW_WIDTH:  # a phone: Chromium's windows are never that narrow, its emulation is
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
        self.artifacts = artifacts
        self.console: list[dict[str, Any]] = []
        self.network: list[dict[str, Any]] = []

    def close(self) -> None:
        with contextlib.suppress(WebDriverException):
            self.driver.quit()

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, css: str) -> str | None:
        text: str | None = self.js("const n = document.querySelector(arguments[0]); return n ? n.textContent : null",
                                   css)
        return text

    def count(self, css: str) -> int:
        return int(self.js("return document.querySelectorAll(arguments[0]).length", css))

    def wait(self, condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        return WebDriverWait(self.driver, timeout_s, poll_frequency=0.05).until(
            lambda _: condition(), message=f"waiting for {what}")

    def wait_text(self, css: str, expected: str | Callable[[str], bool], what: str | None = None) -> str:
        def matches() -> str | None:
            found = self.text(css)
            ok = found is not None and (expected(found) if callable(expected) else found == expected)
            return found if ok else None
        return str(self.wait(matches, what or f"{css} to read {expected!r} (now {self.text(css)!r})"))

    def click(self, css: str) -> None:
        def clicked() -> bool:
            try:
                self.driver.find_element(By.CSS_SELECTOR, css).click()
                return True
            except StaleElementReferenceException:
                return False
        self.wait(clicked, f"a click on {css}")

    def type_into(self, css: str, text: str) -> None:
        field = self.driver.find_element(By.CSS_SELECTOR, css)
        field.clear()
        field.send_keys(text)

    def drain_logs(self) -> None:
        self.console += self.driver.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
        for entry in self.driver.get_log("performance"):  # type: ignore[no-untyped-call]  # untyped in selenium
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.network.append(message["params"]["request"])

    def save(self, name: str) -> Path:
        """Screenshot, DOM and console of the page now, in the artifacts folder; returns the folder."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(WebDriverException):
            self.driver.save_screenshot(str(self.artifacts / f"{name}.png"))
            (self.artifacts / f"{name}.html").write_text(self.driver.page_source)
            self.drain_logs()
        (self.artifacts / f"{name}-console.json").write_text(json.dumps(self.console, indent=1))
        return self.artifacts


@contextlib.contextmanager
def on_failure_saved(browser: Browser, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException as failure:
        folder = browser.save(name)
        failure.add_note(f"screenshot, DOM and console of the page: {folder}/{name}.*")
        raise


@pytest.fixture
def browser_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, int], Browser]]:
    missing = _browser_missing()
    if missing is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"the browser test must run here (CI or PM_REQUIRE_REAL_SERVICES=1): {missing}")
        pytest.skip(missing)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never fetches a driver or a browser
    opened: list[Browser] = []

    def make(width: int = 1400, height: int = 1000) -> Browser:
        opened.append(Browser(tmp_path / "web-artifacts", width, height))
        return opened[-1]

    yield make
    for browser in opened:
        browser.close()


# --------------------------------------------------------------------------- page helpers

def percent(price: str) -> str:
    """The page's rendering of a price: "0.512345" -> "51.23%"."""
    hundredths = (dec(price) * 10_000).quantize(Decimal(1), rounding="ROUND_HALF_UP")
    return f"{hundredths / 100:.2f}%"


def market_row(market_id: str) -> str:
    return f'#market-list li[data-market-id="{market_id}"]'


def position_cell(market_id: str, outcome: str, cell: str) -> str:
    return f'#positions tbody tr[data-market-id="{market_id}"][data-outcome="{outcome}"] td.{cell}'


def chart_points(browser: Browser) -> int:
    return int(browser.js("return Number(document.getElementById('chart').dataset.points)"))


def no_alert(browser: Browser) -> bool:
    try:
        browser.driver.switch_to.alert  # noqa: B018  (raises when there is none)
    except NoAlertPresentException:
        return True
    return False


def use_key(browser: Browser, user: User, balance: str) -> None:
    browser.type_into("#api-key", user.api_key)
    browser.click("#key-use")
    browser.wait_text("#balance", balance)
    browser.wait_text("#private-status", "you: live", "the private stream to be live")


# --------------------------------------------------------------------------- without a browser

def test_every_replica_serves_the_page_with_cache_and_security_headers(web_stack: Stack) -> None:
    with httpx.Client(timeout=10) as client:
        pages = [client.get(f"{url}/") for url in web_stack.urls]
        for page in pages:
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["content-security-policy"] == CSP
            assert page.headers["cache-control"] == "no-cache"
            assert page.headers["x-content-type-options"] == "nosniff"
        assert pages[0].text == pages[1].text  # one release: the same page and asset version everywhere
        etag = pages[0].headers["etag"]
        again = client.get(f"{web_stack.url}/", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""

        html = pages[0].text
        assert "http://" not in html and "https://" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
        assert " style=" not in html and "<style" not in html, "an inline style"
        assets = re.findall(r'(?:src|href)="(/web/[0-9a-f]{16}/[^"]+)"', html)
        assert {a.rsplit("/", 1)[-1] for a in assets} == {
            "favicon.svg", "uPlot.min.css", "app.css", "uPlot.iife.min.js", "app.js"}
        for path in assets:
            asset = client.get(f"{web_stack.url}{path}", headers={"Accept-Encoding": "gzip"})
            assert asset.status_code == 200, path
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable", path
            assert asset.headers["content-security-policy"] == CSP
        script = client.get(f"{web_stack.url}{next(a for a in assets if a.endswith('/app.js'))}")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        version = assets[0].split("/")[2]
        # The modules the entry point imports, by relative path, are served under the same version.
        for module in re.findall(r"from '\./([a-z]+\.js)'", script.text):
            assert client.get(f"{web_stack.url}/web/{version}/{module}").status_code == 200, module

        for missing in (f"/web/{'0' * 16}/app.js", f"/web/{version}/nope.js", f"/web/{version}/../routes/web.py",
                        f"/web/{version}/vendor/README.md", f"/web/{version}/index.html"):
            answer = client.get(f"{web_stack.url}{missing}")
            assert answer.status_code == 404, missing
            assert answer.json()["error"]["code"] == "NOT_FOUND"
        # The JSON routes are as they were: no page headers on them.
        assert "content-security-policy" not in client.get(f"{web_stack.url}/v1/markets").headers


def test_the_wheel_declares_every_file_of_the_page() -> None:
    """pyproject's package-data covers api/web (the wheel, and so `pip install .`, carries the page)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "predmarket.api"]
    files = [p.relative_to(WEB.parent).as_posix() for p in WEB.rglob("*") if p.is_file()]
    assert {"web/index.html", "web/app.js", "web/vendor/uPlot.iife.min.js", "web/vendor/uPlot.LICENSE"} <= set(files)
    uncovered = [f for f in files if not any(fnmatch.fnmatch(f, p) and f.count("/") == p.count("/")
                                             for p in patterns)]
    assert uncovered == []
    assert "1.6.32" in (WEB / "vendor" / "README.md").read_text()


# --------------------------------------------------------------------------- in the browser

def test_a_person_trades_on_the_live_page(web_api: Api, web_stack: Stack,
                                          browser_factory: Callable[..., Browser]) -> None:
    api = web_api
    trader, other = api.create_user("1000"), api.create_user("1000")
    market = api.create_market(b="100", market_id=unique("rain"), name="Will it rain in Lisbon on Friday?")
    hostile = api.create_market(b="50", market_id=unique("hostile"), name=HOSTILE)
    browser = browser_factory()
    with on_failure_saved(browser, "trade"):
        browser.driver.get(f"{web_stack.url}/")
        browser.wait_text("#stream-status", "live", "the public stream to be live")

        # The list, the hostile name as text: no <img> made of it, no alert run.
        browser.wait(lambda: browser.count(market_row(market)) and browser.count(market_row(hostile)), "both markets")
        assert browser.text(f"{market_row(hostile)} .market-title") == HOSTILE
        assert browser.driver.find_element(By.CSS_SELECTOR, f"{market_row(hostile)} .market-title").text == HOSTILE
        assert browser.text(f"{market_row(market)} .chips") == "YES 50.00%NO 50.00%"
        assert browser.count("img") == 0 and no_alert(browser)

        # The key: kept in this tab's sessionStorage only.
        use_key(browser, trader, "1000.000000")
        assert browser.js("return sessionStorage.getItem('predmarket.apiKey')") == trader.api_key
        assert browser.js("return localStorage.length") == 0 and browser.js("return document.cookie") == ""

        # A market: prices, chart, a live quote.
        browser.click(f"{market_row(market)} button")
        browser.wait_text("#market-name", "Will it rain in Lisbon on Friday?")
        browser.wait_text('#market-prices [data-outcome="YES"] .price-value', "50.00%")
        browser.wait(lambda: chart_points(browser) >= 2, "the chart's first points")
        points = chart_points(browser)
        quote = api.quote(market, side="BUY", outcome="YES", shares="10").json()
        browser.wait_text("#quote", lambda text: f"cost {quote['cost']}" in text, "the ticket's quote")
        max_cost = (dec(quote["cost"]) * Decimal("1.01")).quantize(Decimal("0.000001"), rounding="ROUND_CEILING")
        assert f"pay at most {fmt(max_cost)}" in str(browser.text("#quote"))

        # A trade through the ticket: the answer, then balance, position, price, chart, trades from the streams.
        browser.click("#ticket-submit")
        message = browser.wait_text("#ticket-message", lambda text: text.startswith("Bought 10.000000 YES for "),
                                    "the ticket's confirmation")
        confirmed = re.fullmatch(r"Bought 10\.000000 YES for ([0-9.]+) \(avg [0-9.]+\), trade (\d+)\.", message)
        assert confirmed, message
        cost, trade_id = dec(confirmed[1]), int(confirmed[2])
        assert cost == dec(quote["cost"])
        browser.wait_text("#balance", fmt(Decimal(1000) - cost))
        browser.wait_text(position_cell(market, "YES", "shares"), "10.000000")
        now = api.market(market)
        browser.wait_text('#market-prices [data-outcome="YES"] .price-value', percent(now["price_yes"]))
        browser.wait_text(f'{market_row(market)} [data-outcome="YES"]', f"YES {percent(now['price_yes'])}")
        browser.wait(lambda: chart_points(browser) > points, "the chart to grow")
        browser.wait(lambda: browser.count(f'#trades tr[data-trade-id="{trade_id}"]'), "the trade in the list")
        browser.wait_text(position_cell(market, "YES", "value"),
                          lambda text: text != "—", "the position's value (a live SELL quote)")

        # A sale through the ticket: the slippage limit becomes min_proceeds.
        browser.click('#ticket input[name="side"][value="SELL"]')
        browser.type_into("#ticket-quantity", "4")
        browser.wait_text("#ticket-submit", "Sell YES")
        assert browser.js("return document.getElementById('by-amount').disabled") is True
        sale = api.quote(market, side="SELL", outcome="YES", shares="4").json()
        browser.wait_text("#quote", lambda text: f"proceeds {sale['cost']}" in text, "the sale's quote")
        browser.click("#ticket-submit")
        browser.wait_text("#ticket-message", lambda text: text.startswith(f"Sold 4.000000 YES for {sale['cost']} "),
                          "the sale's confirmation")
        browser.wait_text(position_cell(market, "YES", "shares"), "6.000000")
        browser.wait_text("#balance", fmt(Decimal(1000) - cost + dec(sale["cost"])))
        cost -= dec(sale["cost"])
        browser.click('#ticket input[name="side"][value="BUY"]')

        # The same user trading elsewhere (through the API, on the other replica): only the private
        # stream can tell the page, which makes no request for it.
        own = api.buy(trader, market, "NO", "5", replica=1)
        browser.wait_text(position_cell(market, "NO", "shares"), "5.000000")
        browser.wait_text("#balance", fmt(Decimal(1000) - cost - dec(own["cost"])))

        # A second client's trade, through the API on the other replica, shows up live.
        points = chart_points(browser)
        theirs = api.buy(other, market, "YES", "40", replica=1)
        browser.wait(lambda: browser.count(f'#trades tr[data-trade-id="{theirs["trade_id"]}"]'), "their trade")
        browser.wait_text('#market-prices [data-outcome="YES"] .price-value', percent(theirs["price_yes"]))
        browser.wait(lambda: chart_points(browser) > points, "the chart to grow with their trade")

        # An order too large for the balance: the API's error body, shown as it came.
        browser.type_into("#ticket-quantity", "100000")
        browser.wait_text("#quote", lambda text: "100000.000000 YES shares" in text, "the large order's quote")
        balance = browser.text("#balance")
        browser.click("#ticket-submit")
        error = browser.wait_text("#ticket-message", lambda text: text.startswith("INSUFFICIENT_FUNDS: "),
                                  "the API's error in the ticket")
        assert browser.js("return document.getElementById('ticket-message').dataset.kind") == "error", error
        assert browser.text("#balance") == balance

        # The hostile market on show: its name as text, everywhere.
        browser.click(f"{market_row(hostile)} button")
        browser.wait_text("#market-name", HOSTILE)
        assert browser.driver.find_element(By.ID, "market-name").text == HOSTILE  # visible, as typed
        assert browser.count("img") == 0 and no_alert(browser)

        # Back to the first market for the picture, then what went over the network.
        browser.click(f"{market_row(market)} button")
        browser.type_into("#ticket-quantity", "25")
        browser.wait_text("#market-name", "Will it rain in Lisbon on Friday?")
        browser.wait_text("#quote", lambda text: "25.000000 YES shares" in text, "the quote for 25 shares")
        browser.wait(lambda: chart_points(browser) >= 4, "the chart's history")
        if SCREENSHOT_TO:
            browser.driver.save_screenshot(SCREENSHOT_TO)
        _check_network(browser, web_stack, trader)


def _check_network(browser: Browser, stack: Stack, user: User) -> None:
    """Every request went to the page's own origin; the key only ever in an Authorization header."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(stack.url))
    resources = browser.js("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(origin + "/") for name in resources), resources
    browser.drain_logs()
    urls = [request["url"] for request in browser.network]
    assert any(url.endswith("/v1/me/events") for url in urls) and any("/v1/events" in url for url in urls), urls
    assert all(url.startswith(origin + "/") for url in urls), [u for u in urls if not u.startswith(origin)]
    assert not any(user.api_key in url for url in urls)
    with_key = [r for r in browser.network if user.api_key in json.dumps(r)]
    assert with_key and all(r["headers"].get("Authorization") == f"Bearer {user.api_key}" for r in with_key)
    assert all(user.api_key not in json.dumps({k: v for k, v in r.items() if k != "headers"}) for r in with_key)
    # Nothing the Content-Security-Policy refused, no script error. The failed requests expected: the
    # over-large order's 422, and (until the server has it) one 404 of /v1/me/positions, asked once.
    severe = [e["message"] for e in browser.console if e["level"] == "SEVERE"]
    expected = re.compile(r"/trades - Failed to load resource: .* status of 422|"
                          r"/v1/me/positions - Failed to load resource: .* status of 404")
    assert [m for m in severe if not expected.search(m)] == [], severe
    assert sum("/v1/me/positions" in m for m in severe) <= 1, severe


def test_the_pages_arithmetic_is_exact_and_reads_markets_with_more_outcomes(
        web_stack: Stack, browser_factory: Callable[..., Browser]) -> None:
    """The page's own modules, imported as served: BigInt micro-units agree with Decimal to the last
    digit (slippage limits round toward the user's protection), and a market with more outcomes
    (the contract's `outcomes` and PriceUpdated's `prices` JSON) is read like a YES/NO one."""
    browser = browser_factory()
    with on_failure_saved(browser, "modules"):
        browser.driver.get(f"{web_stack.url}/")
        version = browser.wait(lambda: browser.js(
            "const s = document.querySelector('script[type=module]'); return s && s.src.split('/')[4]"), "the page")
        result = browser.driver.execute_async_script("""
            const [done, base] = [arguments[arguments.length - 1], arguments[0]];
            Promise.all([import(base + '/units.js'), import(base + '/store.js')]).then(([u, s]) => {
              const big = '9223372036854.775807';
              const market = { market_id: 'm', outcomes: [
                { outcome: 'RED', price: '0.333334', shares: '0.000000' },
                { outcome: 'GREEN', price: '0.333333', shares: '0.000000' },
                { outcome: 'BLUE', price: '0.333333', shares: '0.000000' }] };
              s.applyPrices(market, { market_id: 'm', prices: '{"RED":"0.500000","GREEN":"0.250000","BLUE":"0.250000"}',
                shares: '{"RED":"10.000000","GREEN":"0.000000","BLUE":"0.000000"}' });
              done({
                roundTrip: u.fromMicro(u.toMicro(big)), negative: u.fromMicro(u.toMicro('-0.5')),
                ceil: u.fromMicro(u.mulDivCeil(u.toMicro('5.124947'), 101000000n, 100000000n)),
                floor: u.fromMicro(u.mulDivFloor(u.toMicro('2.079952'), 99000000n, 100000000n)),
                average: u.averagePrice('5.124947', '10.000000'), percent: u.percent('0.512345'),
                short: u.short('-0.004999'), requestOk: ['1', '0.000001', '10.5'].map(u.isRequestNumber),
                requestBad: ['1e3', '-1', '0.0000001', '1.', ' 1', '１'].map(u.isRequestNumber),
                outcomes: s.outcomesOf(market).map((o) => [o.outcome, o.price, o.shares]),
                binary: s.outcomesOf({ price_yes: '0.6', price_no: '0.4', yes_shares: '1', no_shares: '0' })
                  .map((o) => o.outcome),
                blue: s.priceOf(market, 'BLUE'),
              });
            }, (error) => done({ error: String(error) }));
            """, f"/web/{version}")
    assert result == {
        "roundTrip": "9223372036854.775807", "negative": "-0.500000",
        "ceil": "5.176197",  # 5.124947 * 1.01 = 5.17619647, up
        "floor": "2.059152",  # 2.079952 * 0.99 = 2.05915248, down
        "average": "0.512495", "percent": "51.23%", "short": "0.00",
        "requestOk": [True, True, True], "requestBad": [False] * 6,
        "outcomes": [["RED", "0.500000", "10.000000"], ["GREEN", "0.250000", "0.000000"],
                     ["BLUE", "0.250000", "0.000000"]],
        "binary": ["YES", "NO"], "blue": "0.250000",
    }, result


def test_a_person_trades_a_market_of_three_outcomes(web_api: Api, web_stack: Stack,
                                                    browser_factory: Callable[..., Browser]) -> None:
    """A market of labels: a chip per label in the list, a price button per label that picks the ticket's
    outcome and the chart's, a trade by label, and every label's price live from another client's trade."""
    api = web_api
    labels = ["Red", "Green", "Blue"]
    api.deposit("house", "20")  # more than ceil(10 ln 3)
    r = api.admin("POST", "/v1/markets", json={"name": "Which colour wins?", "liquidity_b": "10", "outcomes": labels,
                                               "market_id": unique("colour")})
    assert r.status_code == 201, r.text
    market = r.json()["market_id"]
    assert api.admin("POST", f"/v1/markets/{market}/open").status_code == 200
    trader, other = api.create_user("100"), api.create_user("100")
    browser = browser_factory()
    with on_failure_saved(browser, "labels"):
        browser.driver.get(f"{web_stack.url}/")
        browser.wait_text("#stream-status", "live", "the public stream to be live")
        browser.wait(lambda: browser.count(market_row(market)), "the market of labels")
        assert browser.text(f"{market_row(market)} .chips") == "Red 33.33%Green 33.33%Blue 33.33%"
        use_key(browser, trader, "100.000000")

        browser.click(f"{market_row(market)} button")
        browser.wait_text("#market-name", "Which colour wins?")
        assert browser.js("return [...document.querySelectorAll('#market-prices button.price')]"
                          ".map((b) => b.dataset.outcome)") == labels
        assert browser.js("return [...document.getElementById('ticket-outcome').options].map((o) => o.value)") == labels
        browser.wait_text("#chart-source", lambda text: text.startswith("Chart: Red price"), "the chart of Red")

        # The Blue button: the ticket's outcome, its quote and the chart follow.
        browser.click('#market-prices button[data-outcome="Blue"]')
        browser.wait_text("#ticket-submit", "Buy Blue")
        browser.wait_text("#chart-source", lambda text: text.startswith("Chart: Blue price"), "the chart of Blue")
        assert browser.js("return document.querySelector('#market-prices [data-outcome=\"Blue\"]')"
                          ".getAttribute('aria-pressed')") == "true"
        quote = api.quote(market, side="BUY", outcome="Blue", shares="10").json()
        browser.wait_text("#quote", lambda text: f"cost {quote['cost']}" in text and "10.000000 Blue shares" in text,
                          "the quote of Blue")
        browser.click("#ticket-submit")
        bought = f"Bought 10.000000 Blue for {quote['cost']} "
        browser.wait_text("#ticket-message", lambda text: text.startswith(bought), "the ticket's confirmation")
        browser.wait_text("#balance", fmt(Decimal(100) - dec(quote["cost"])))
        browser.wait_text(position_cell(market, "Blue", "shares"), "10.000000")
        for label, price in quote["prices"].items():
            browser.wait_text(f'#market-prices [data-outcome="{label}"] .price-value', percent(price))

        # Another client's trade of Green moves every label's price on the page.
        theirs = api.buy(other, market, "Green", "5", replica=1)
        browser.wait(lambda: browser.count(f'#trades tr[data-trade-id="{theirs["trade_id"]}"]'), "their trade")
        for label, price in theirs["prices"].items():
            browser.wait_text(f'#market-prices [data-outcome="{label}"] .price-value', percent(price))
            browser.wait_text(f'{market_row(market)} [data-outcome="{label}"]', f"{label} {percent(price)}")
        # The position of Blue is valued as selling it now would pay, after their trade moved the book.
        sell_now = api.quote(market, side="SELL", outcome="Blue", shares="10").json()["cost"]
        value_cell = position_cell(market, "Blue", "value")
        browser.wait(lambda: browser.js(f"return document.querySelector('{value_cell}')?.title") == sell_now,
                     "Blue's value (a live SELL quote, exact in the cell's title)")
        severe = [e["message"] for e in browser.driver.get_log("browser")  # type: ignore[no-untyped-call]
                  if e["level"] == "SEVERE"]
        assert severe == [], severe  # /v1/me/positions values labelled positions too


def test_the_page_fits_a_phone(web_api: Api, web_stack: Stack, browser_factory: Callable[..., Browser]) -> None:
    market = web_api.create_market(b="20", market_id=unique("phone"), name="A long market name " * 4)
    browser = browser_factory(390, 844)
    with on_failure_saved(browser, "phone"):
        browser.driver.get(f"{web_stack.url}/#market={market}")
        browser.wait_text("#market-name", lambda text: text.startswith("A long market name"))
        browser.wait(lambda: not browser.js("return document.getElementById('ticket-panel').hidden"), "the ticket")
        browser.wait(lambda: chart_points(browser) >= 2 and browser.count("#chart canvas"), "the chart")
        assert browser.js("return window.innerWidth") <= 400
        overflow = browser.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the screen"
        # One column: the panels stack, each as wide as the screen allows.
        boxes = browser.js("return ['markets-panel', 'market-panel', 'ticket-panel', 'positions-panel'].map("
                           "id => document.getElementById(id).getBoundingClientRect().toJSON())")
        assert len({round(b["left"]) for b in boxes}) == 1, boxes
        assert all(b["top"] < later["top"] for b, later in itertools.pairwise(boxes)), boxes
        assert browser.driver.find_element(By.ID, "ticket-submit").is_displayed()
