"""A shopper's and a merchandiser's journeys in a real browser: Debian's headless Chromium, driven by Playwright.

The server is the live shop (gunicorn, DEBUG off, production headers and the Content-Security-Policy on,
10 uploads a minute per client) on the session's Celery worker and Redis, with the demo catalogue indexed
and trained. The browser talks to 127.0.0.1 only: its background networking is off, and a route on every
context aborts (and records) any request for another host; each test asserts there was none. Every page
visited is watched for Content-Security-Policy violations, uncaught exceptions and console errors.

Opt-in screenshots for the README: set SCREENSHOTS_DIR and each journey saves full-page PNGs there.

Never `playwright install`: the tests use the system Chromium (CHROMIUM, else /usr/bin/chromium or
chromium-browser on PATH) and skip, saying so, where there is none.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import LIVE_STACK

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "street2shop" / "photos"


def _find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


CHROMIUM = _find_chromium()
if CHROMIUM is None and os.environ.get("REQUIRE_BROWSER"):
    raise RuntimeError("REQUIRE_BROWSER is set (CI) but no Chromium was found: apt-get install chromium")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium found: install Debian's chromium (apt-get install chromium) or set CHROMIUM to run the "
        "browser tests",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
Error = sync_api.Error
expect = sync_api.expect

# Nothing but the shop: no component updates, field trials, safe browsing, metrics, pings or QUIC probes.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--metrics-recording-only", "--disable-domain-reliability", "--no-pings",
]
LOCAL_HOST = "127.0.0.1"
SEARCH_RESULTS_URL = re.compile(r"/search/([0-9a-f-]{36})/$")
FINAL_STATUSES = ("Active", "Ready", "Failed")

pytestmark = LIVE_STACK  # the database through the live server and the worker only (see conftest)

# Installed before any page script: every CSP violation is kept on the page (read before leaving it)
# and reported to the test at once (the admin's run page reloads itself, so "before leaving" is not
# always the test's to choose).
CSP_LISTENER = """
(() => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    const v = {document: e.documentURI, directive: e.violatedDirective, blocked: e.blockedURI,
               source: e.sourceFile, line: e.lineNumber, sample: e.sample,
               key: performance.timeOrigin + "/" + window.__cspViolations.length};
    window.__cspViolations.push(v);
    if (window.__reportCspViolation) window.__reportCspViolation(v);
  });
})();
"""


# --------------------------------------------------------------------------- the browser and its watchers


@pytest.fixture(scope="module")
def shop(live_shop, indexed_catalogue) -> str:
    """The live shop's URL, once the demo catalogue is indexed and its first version trained."""
    return live_shop.url


@pytest.fixture
def browser(shop):
    # One Chromium per test (a second to start), started after the database fixtures and stopped before
    # theirs end: Playwright's sync API keeps an event loop running in this thread, and Django refuses
    # the ORM (the test transaction, the catalogue's flush) while one runs.
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watch:
    """A test's browser contexts and what happened in them that must not: other hosts, CSP, JS errors."""

    def __init__(self, browser, base: str) -> None:
        self.browser = browser
        self.base = base
        self.contexts = []
        self.elsewhere: list[str] = []
        self.csp: dict[str, dict] = {}
        self.js_errors: list[str] = []
        self.visited: list[str] = []  # every document loaded, for the failure messages
        self.allowed_console: list[re.Pattern] = []

    # -- contexts and pages

    def new_page(self, **context_options):
        context = self.browser.new_context(
            base_url=self.base, viewport={"width": 1280, "height": 1000}, **context_options
        )
        context.set_default_timeout(30_000)
        context.route("**/*", self._only_the_shop)
        context.expose_binding("__reportCspViolation", lambda source, violation: self._csp(violation))
        context.add_init_script(CSP_LISTENER)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.js_errors.append(f"uncaught {error.name}: {error.message} ({page.url})"))
        page.on("load", lambda p: self.visited.append(p.url))
        return page

    def _only_the_shop(self, route, request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme == "blob":  # blob:http://127.0.0.1:port/uuid, the upload page's preview
            parts = urlsplit(parts.path)
        if parts.scheme == "data" or parts.hostname == LOCAL_HOST:
            route.continue_()
        else:
            self.elsewhere.append(request.url)
            route.abort("blockedbyclient")

    def _console(self, message) -> None:
        text = message.text
        if message.type != "error" and "Content Security Policy" not in text:
            return
        if not any(pattern.search(text) for pattern in self.allowed_console):
            self.js_errors.append(f"console.{message.type}: {text} ({message.location.get('url', '')})")

    def _csp(self, violation: dict) -> None:
        self.csp[violation.get("key") or json.dumps(violation, sort_keys=True)] = violation

    def leave(self, page) -> None:
        """Read the page's own list of CSP violations before navigating away from it."""
        try:
            for violation in page.evaluate("() => window.__cspViolations || []"):
                self._csp(violation)
        except Error:
            pass  # the page is going already; the binding reported its violations as they happened

    # -- checks

    def assert_clean(self) -> None:
        for context in self.contexts:
            for page in context.pages:
                self.leave(page)
        pages = "\npages visited: " + " ".join(self.visited)
        assert not self.elsewhere, f"the browser tried to reach beyond {LOCAL_HOST}: {self.elsewhere}{pages}"
        violations = [
            f"{v.get('directive')} blocked {v.get('blocked') or '(inline)'} on {v.get('document')}"
            f" ({v.get('source')}:{v.get('line')} {v.get('sample') or ''})".rstrip()
            for v in self.csp.values()
        ]
        assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations) + pages
        assert not self.js_errors, "JavaScript errors:\n" + "\n".join(self.js_errors) + pages

    def close(self) -> None:
        for context in self.contexts:
            try:
                context.close()
            except Error:
                pass


@pytest.fixture
def watch(browser, shop):
    watched = Watch(browser, shop)
    yield watched
    watched.close()


def screenshot(page, name: str) -> None:
    """A full-page PNG for the README, only when SCREENSHOTS_DIR asks for it."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- photos


def street_photo(demo_root: Path) -> Path:
    """The first real Street2Shop street photo in ../shared, else a street photo of the demo dataset."""
    if SHARED_PHOTOS.is_dir():
        photos = sorted(p for p in SHARED_PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if photos:
            return photos[0]
    pairs = json.loads((demo_root / "meta" / "json" / "test_pairs_dresses.json").read_text())
    return demo_root / "photos" / f"{pairs[0]['photo']:09d}.jpg"


def small_jpeg(index: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 200), (240, 236, 230))
    ImageDraw.Draw(image).polygon([(80, 20), (130, 190), (30, 190)], fill=(150 + index * 7 % 100, 40, 90))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def choose_photo(page, photo) -> dict:
    """Attach a photo on the upload page and wait for its preview; the preview's box on screen."""
    page.set_input_files("#id_image", photo)
    expect(page.locator("#preview-wrap")).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.getElementById('preview'); return i.complete && i.naturalWidth > 0; }"
    )
    preview = page.locator("#preview")
    preview.scroll_into_view_if_needed()
    box = preview.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, box
    return box


def box_fields(page) -> list[str]:
    return [page.input_value(f"#id_box_{name}") for name in ("left", "top", "width", "height")]


# A box from 25 % to 75 % across and 15 % to 85 % down the photo.
BOX = (0.25, 0.15, 0.75, 0.85)


def corners(preview: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    x0, y0, x1, y1 = BOX
    return (
        (preview["x"] + preview["width"] * x0, preview["y"] + preview["height"] * y0),
        (preview["x"] + preview["width"] * x1, preview["y"] + preview["height"] * y1),
    )


# --------------------------------------------------------------------------- the journeys (in this order)


def test_it_shows_ten_similar_dresses_on_a_product_page(watch):
    page = watch.new_page()
    page.goto("/")
    cards = page.locator(".grid a.card")
    expect(page.locator("h1")).to_have_text("Catalogue")
    assert cards.count() > 10
    expect(page.locator(".filters .count")).to_have_text("40 products")
    screenshot(page, "catalogue")

    title = cards.nth(2).locator(".meta div").first.inner_text()
    watch.leave(page)
    with page.expect_navigation():
        cards.nth(2).click()
    assert re.search(r"/products/\d+/$", page.url), page.url
    expect(page.locator("h1")).to_have_text(title)
    expect(page.locator("#similar-items a.card")).to_have_count(10)
    assert page.locator("#not-indexed").count() == 0
    page.wait_for_function(
        "() => { const i = document.querySelector('.product img.main'); return i && i.complete && i.naturalWidth > 0; }"
    )
    # The recommendations are other dresses, each with its distance.
    hrefs = page.locator("#similar-items a.card").evaluate_all("cards => cards.map((c) => c.pathname)")
    assert len(set(hrefs)) == 10 and urlsplit(page.url).path not in hrefs
    expect(page.locator("#similar-items .distance")).to_have_count(10)
    screenshot(page, "product")

    # And on to one of them: its own page has its own ten.
    watch.leave(page)
    with page.expect_navigation():
        page.locator("#similar-items a.card").first.click()
    expect(page.locator("#similar-items a.card")).to_have_count(10)
    watch.assert_clean()


def test_it_finds_a_dress_from_a_street_photo_with_a_box_dragged_by_mouse(watch, demo_root):
    photo = street_photo(demo_root)
    page = watch.new_page()
    waits: list[str] = []
    page.on("request", lambda request: waits.append(request.url) if "/wait/" in request.url else None)
    page.goto("/search/")
    expect(page.locator("#box-label")).to_have_text("No box: the whole photo is searched.")
    expect(page.locator("#clear-box")).to_be_hidden()

    preview = choose_photo(page, photo)
    (x0, y0), (x1, y1) = corners(preview)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    expect(page.locator("#box")).to_be_visible()  # drawn while dragging
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()

    left, top, width, height = (int(value) for value in box_fields(page))
    natural = page.locator("#preview").evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    # In pixels of the original photo, not of the scaled preview.
    assert abs(left - natural[0] * BOX[0]) <= natural[0] * 0.02, (left, natural)
    assert abs(top - natural[1] * BOX[1]) <= natural[1] * 0.02, (top, natural)
    assert abs(width - natural[0] * (BOX[2] - BOX[0])) <= natural[0] * 0.02, (width, natural)
    assert abs(height - natural[1] * (BOX[3] - BOX[1])) <= natural[1] * 0.02, (height, natural)
    expect(page.locator("#box-label")).to_have_text(f"Box: {width}×{height} px at ({left}, {top}).")
    expect(page.locator("#clear-box")).to_be_visible()
    screenshot(page, "search-box")

    watch.leave(page)
    with page.expect_navigation():
        page.locator("#search-form button[type=submit]").click()
    match = SEARCH_RESULTS_URL.search(page.url)
    assert match, page.url
    query_id = match.group(1)

    # The page's script waits on /search/<id>/wait/ and swaps the ten results in.
    expect(page.locator("#search-results a.card")).to_have_count(10, timeout=180_000)
    assert any(f"/search/{query_id}/wait/" in url for url in waits), waits
    expect(page.locator("#search-summary")).to_contain_text("closest dresses")

    photo_img = page.locator("#search-photo img.main")
    expect(photo_img).to_have_attribute("src", f"/search/{query_id}/photo.jpg")
    page.wait_for_function(
        "() => { const i = document.querySelector('#search-photo img.main'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=30_000,
    )
    searched = page.locator("#searched-box")
    expect(searched).to_be_visible()
    rect = page.locator("#searched-box rect")
    expect(rect).to_have_count(1)
    drawn = rect.evaluate("(r) => ['x', 'y', 'width', 'height'].map((a) => Number(r.getAttribute(a)))")
    expected = [100 * BOX[0], 100 * BOX[1], 100 * (BOX[2] - BOX[0]), 100 * (BOX[3] - BOX[1])]
    assert all(abs(a - b) <= 2.5 for a, b in zip(drawn, expected)), (drawn, expected)
    # The box lies over the photo as shown.
    shown, over = photo_img.bounding_box(), searched.bounding_box()
    assert abs(shown["width"] - over["width"]) <= 2 and abs(shown["height"] - over["height"]) <= 2, (shown, over)
    screenshot(page, "results")
    watch.assert_clean()


def test_it_draws_the_box_with_a_finger(watch, demo_root):
    page = watch.new_page(has_touch=True)
    page.goto("/search/")
    preview = choose_photo(page, street_photo(demo_root))
    (x0, y0), (x1, y1) = corners(preview)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0, "id": 1}]})
    for step in range(1, 9):
        x, y = x0 + (x1 - x0) * step / 8, y0 + (y1 - y0) * step / 8
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y, "id": 1}]})
        page.wait_for_timeout(16)  # a frame per move, as a finger would
    # The finger rests on the corner before it lifts: lifted while still moving, Chromium takes the drag for
    # a fling and swallows the click of a tap that follows within ~half a second (the "Clear box" below).
    page.wait_for_timeout(250)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()

    fields = box_fields(page)
    assert all(re.fullmatch(r"\d+", value) for value in fields), fields
    left, top, width, height = (int(value) for value in fields)
    natural = page.locator("#preview").evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    assert abs(width - natural[0] * (BOX[2] - BOX[0])) <= natural[0] * 0.03, (fields, natural)
    assert abs(height - natural[1] * (BOX[3] - BOX[1])) <= natural[1] * 0.03, (fields, natural)
    expect(page.locator("#box")).to_be_visible()
    expect(page.locator("#box-label")).to_have_text(f"Box: {width}×{height} px at ({left}, {top}).")

    # "Clear box" takes it away again.
    page.locator("#clear-box").tap()
    expect(page.locator("#clear-box")).to_be_hidden()
    assert box_fields(page) == ["", "", "", ""]
    expect(page.locator("#box-label")).to_have_text("No box: the whole photo is searched.")
    watch.assert_clean()


def test_it_shows_a_friendly_page_past_the_rate_limit(watch):
    # The live server counts 10 uploads a minute per address, and every test's browser is 127.0.0.1: the
    # uploads of the journeys above count too. Its fixed one-minute window may also roll over once while
    # this loops, so allow up to two windows' worth before calling the limit missing.
    page = watch.new_page()
    # Chromium logs every 4xx document to the console; this one is the point of the test.
    watch.allowed_console.append(re.compile(r"^Failed to load resource: the server responded with a status of 429 "))
    refused = None
    accepted = 0
    for index in range(22):
        page.goto("/search/")
        page.set_input_files("#id_image", {"name": f"dress-{index}.jpg", "mimeType": "image/jpeg",
                                           "buffer": small_jpeg(index)})
        watch.leave(page)
        with page.expect_navigation() as navigation:
            page.locator("#search-form button[type=submit]").click()
        response = navigation.value
        if response.status == 429:
            refused = response
            break
        assert response.status == 200 and SEARCH_RESULTS_URL.search(page.url), (response.status, page.url)
        accepted += 1
    assert refused is not None, f"no 429 after {accepted} accepted uploads"
    assert refused.request.method == "POST" and urlsplit(refused.url).path == "/search/"
    retry_after = refused.all_headers().get("retry-after")
    assert retry_after and 1 <= int(retry_after) <= 60, retry_after

    box = page.locator("#refused")
    expect(box).to_have_attribute("data-status", "429")
    expect(box.locator("h1")).to_have_text("Too many searches")
    expect(box).to_contain_text(f"Please wait {retry_after} second")
    expect(page).to_have_title(re.compile("^Too many searches"))
    screenshot(page, "rate-limited")

    watch.leave(page)
    with page.expect_navigation():
        box.get_by_role("link", name="Back to search").click()
    expect(page.locator("#search-form")).to_be_visible()
    watch.assert_clean()


def _run_state(page) -> dict | None:
    """What the run's page shows now; None while it is between documents."""
    try:
        return page.evaluate(
            """() => {
              const text = (s) => { const e = document.querySelector(s); return e ? e.textContent.trim() : null; };
              return {
                document: performance.timeOrigin, ready: document.readyState,
                status: text(".field-status .readonly"), progress: text(".field-progress_text .readonly"),
                live: !!document.getElementById("live-run"),
                refreshes: Array.from(document.querySelectorAll('meta[http-equiv="refresh" i]'))
                  .filter((m) => !m.closest("noscript")).length,
              };
            }"""
        )
    except Error:
        return None


def test_it_lets_an_admin_start_a_training_run_and_watch_it_live(watch):
    page = watch.new_page()
    page.goto("/admin/")
    expect(page.locator("#id_username")).to_be_visible()  # redirected to the login form
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw")
    watch.leave(page)
    with page.expect_navigation():
        page.locator("#login-form input[type=submit]").click()
    assert urlsplit(page.url).path == "/admin/", page.url

    watch.leave(page)
    with page.expect_navigation():
        page.get_by_role("link", name="Model versions", exact=True).click()
    assert urlsplit(page.url).path == "/admin/shop/modelversion/", page.url
    runs = page.locator("#result_list tbody th a")
    before = set(runs.evaluate_all("links => links.map((a) => a.pathname)"))
    assert before, "the trained first version is listed"

    start = page.locator("#start-training")
    expect(start).to_be_enabled()
    watch.leave(page)
    with page.expect_navigation():
        start.click()
    assert urlsplit(page.url).path == "/admin/shop/modelversion/", page.url
    expect(page.locator(".messagelist")).to_contain_text("queued")
    new = set(runs.evaluate_all("links => links.map((a) => a.pathname)")) - before
    assert len(new) == 1, new
    (run_path,) = new
    watch.leave(page)
    with page.expect_navigation():
        page.locator(f'#result_list tbody th a[href="{run_path}"]').click()

    # The page reloads itself (admin.js, every 3 s) while the run goes on: the test only looks.
    seen: list[dict] = []
    statuses: list[str] = []
    documents: set[float] = set()
    shot = False
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        state = _run_state(page)
        if state and state["ready"] == "complete" and state["status"]:
            documents.add(state["document"])
            assert state["refreshes"] == 0, "a <meta http-equiv=refresh> outside <noscript>"
            if not seen or (state["status"], state["progress"]) != (seen[-1]["status"], seen[-1]["progress"]):
                seen.append(state)
            if not statuses or statuses[-1] != state["status"]:
                statuses.append(state["status"])
            if state["status"] in FINAL_STATUSES:
                break
            assert state["live"], f"a running run ({state['status']}) without #live-run"
            if not shot and state["status"] == "Training":
                screenshot(page, "admin-run")
                shot = True
        time.sleep(0.25)
    history = [(s["status"], s["progress"]) for s in seen]
    assert statuses and statuses[-1] in FINAL_STATUSES, f"the run did not end within 400 s: {history}"
    assert len(statuses) >= 2, f"the status never changed on screen: {history}"
    assert len(documents) >= 2, "the page never reloaded itself while the run went on"
    error = page.locator(".field-error .readonly")
    assert statuses[-1] != "Failed", f"the run failed: {error.inner_text() if error.count() else history}"

    # Once the run is over the page stops reloading.
    final = _run_state(page)
    assert final and not final["live"], final
    page.wait_for_timeout(4_000)
    assert _run_state(page)["document"] == final["document"], "the page still reloads after the run ended"
    if not shot:
        screenshot(page, "admin-run")
    watch.assert_clean()
