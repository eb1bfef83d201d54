"""A shopper's and a merchandiser's journeys in a real browser: Debian's headless Chromium, driven by Playwright.

The server is the live shop (gunicorn, DEBUG off, production headers and the Content-Security-Policy on,
10 uploads a minute per client) on the session's Celery worker and Redis, with the demo catalogue indexed
and trained. The browser talks to 127.0.0.1 only: its background networking is off, and a route on every
context aborts (and records) any request for another host; each test asserts there was none. Every page
visited is watched for Content-Security-Policy violations, uncaught exceptions and console errors.

Shoppers on phones and with assistive technology: the pages are checked with axe-core (WCAG 2.0/2.1 A
and AA, and best practice; any "serious" or "critical" violation fails) at a desktop and a phone size,
for horizontal overflow from 320 px wide up, and for the two-across grids of a phone; a box drawn with a
finger must search exactly as the same box drawn with a mouse. axe-core is the npm package pinned by package.json and
package-lock.json, installed by `make install` (npm ci) into node_modules/ and never fetched while the
tests run: without it the axe checks skip, saying so (and fail where REQUIRE_BROWSER is set, as in CI).
It is evaluated into each page through DevTools (page.evaluate), which the page's Content-Security-Policy
does not govern (a <script> tag would be inline script, which `script-src 'self'` refuses), so no context
needs bypass_csp and every page, the audited ones too, stays watched for CSP violations.

Opt-in screenshots for the README: set SCREENSHOTS_DIR and each journey saves full-page PNGs there, plus
phone-sized (390×844) JPEGs of a product page and a results page.

Never `playwright install`: the tests use the system Chromium (CHROMIUM, else /usr/bin/chromium or
chromium-browser on PATH) and skip, saying so, where there is none.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.chromium import CHROMIUM_ARGS
from tests.conftest import LIVE_STACK, demo_listings

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

LOCAL_HOST = "127.0.0.1"

# axe-core, as `make install` put it there (npm ci from package-lock.json): never fetched by the tests.
AXE_PACKAGE = REPO / "node_modules" / "axe-core"
AXE_SCRIPT = AXE_PACKAGE / "axe.min.js"
# WCAG 2.0 and 2.1, levels A and AA, and axe's best practices (landmarks, one h1, heading order...): these
# found nothing on the shop's pages or the admin's run page that was not theirs to fix. Only "serious" and
# "critical" findings fail a test; every finding is printed (pytest -rP shows them).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
AXE_FAILING_IMPACTS = ("serious", "critical")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
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

    def new_page(self, viewport: dict | None = None, **context_options):
        context = self.browser.new_context(
            base_url=self.base, viewport=viewport or {"width": 1280, "height": 1000}, **context_options
        )
        context.set_default_timeout(30_000)
        context.route("**/*", self._only_the_shop)
        context.expose_binding("__reportCspViolation", lambda source, violation: self._csp(violation))
        context.add_init_script(CSP_LISTENER)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on(
            "pageerror", lambda error: self.js_errors.append(f"uncaught {error.name}: {error.message} ({page.url})")
        )
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
            with contextlib.suppress(Error):
                context.close()


@pytest.fixture
def watch(browser, shop):
    watched = Watch(browser, shop)
    yield watched
    watched.close()


def screenshot(page, name: str, *, jpeg: bool = False) -> None:
    """A full-page PNG (or a small JPEG) for the README, only when SCREENSHOTS_DIR asks for it."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if jpeg:
            # Lazy images below the fold would show empty in a full-page picture: load them all first.
            page.evaluate(
                """() => Promise.all(Array.from(document.images, (i) => {
                     i.loading = "eager";
                     return i.complete ? null : new Promise((done) => { i.onload = i.onerror = done; });
                   }))"""
            )
            page.screenshot(path=str(Path(folder) / f"{name}.jpg"), full_page=True, type="jpeg", quality=70)
        else:
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- photos


def street_photo(demo_root: Path) -> Path:
    """The first real Street2Shop street photo in ../shared, else a street photo of the demo dataset."""
    if SHARED_PHOTOS.is_dir():
        photos = sorted(p for p in SHARED_PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if photos:
            return photos[0]
    return demo_street_photo(demo_root)


def demo_street_photo(demo_root: Path) -> Path:
    """A street photo of the generated demo dataset: what pages kept as pictures (the README's) may show."""
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


STEPS = 8


def drag_with_finger(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """One finger from start to end (CSS pixels of the viewport), a move a frame, through CDP touch events."""
    (x0, y0), (x1, y1) = start, end
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0, "id": 1}]})
    for step in range(1, STEPS + 1):
        x, y = x0 + (x1 - x0) * step / STEPS, y0 + (y1 - y0) * step / STEPS
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y, "id": 1}]})
        page.wait_for_timeout(16)  # a frame per move, as a finger would
    # The finger rests on the corner before it lifts: lifted while still moving, Chromium takes the drag for
    # a fling and swallows the click of a tap that follows within ~half a second.
    page.wait_for_timeout(250)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def drag_with_mouse(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """The same drag as drag_with_finger, through the same points, with the mouse."""
    (x0, y0), (x1, y1) = start, end
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, STEPS + 1):
        page.mouse.move(x0 + (x1 - x0) * step / STEPS, y0 + (y1 - y0) * step / STEPS)
        page.wait_for_timeout(16)
    page.mouse.up()


def submit_search(watch, page, *, tap: bool = False) -> str:
    """Submit the upload form and wait for the ten results; the results page's path."""
    watch.leave(page)
    button = page.locator("#search-form button[type=submit]")
    with page.expect_navigation():
        button.tap() if tap else button.click()
    assert SEARCH_RESULTS_URL.search(page.url), page.url
    expect(page.locator("#search-results a.card")).to_have_count(10, timeout=180_000)
    return urlsplit(page.url).path


def result_rows(page) -> list[tuple[int, str]]:
    """The results as shown: (product id, distance as printed), nearest first."""
    rows = page.locator("#search-results a.card").evaluate_all(
        "cards => cards.map((c) => [c.pathname, (c.querySelector('.distance') || {}).textContent || ''])"
    )
    return [(int(re.search(r"/products/(\d+)/", path).group(1)), distance.strip()) for path, distance in rows]


# One finished search per live server, for the tests that only look at a results page: its path and the
# browser state (the session cookie) of its owner, who alone sees the photo. Reused so that these tests
# spend no uploads of the rate limit the refusal test counts on.
_FINISHED_SEARCH: dict[str, tuple[str, dict]] = {}


def finished_search(watch, demo_root: Path) -> tuple[str, dict]:
    if watch.base not in _FINISHED_SEARCH:
        page = watch.new_page()
        page.goto("/search/")
        # A generated photo: this search's page is the README's screenshot, which must not show a real one.
        drag_with_mouse(page, *corners(choose_photo(page, demo_street_photo(demo_root))))
        path = submit_search(watch, page)
        _FINISHED_SEARCH[watch.base] = (path, page.context.storage_state())
    return _FINISHED_SEARCH[watch.base]


def post_until_refused(watch, page):
    """Upload small photos until the live server answers 429; that response.

    The live server counts 10 uploads a minute per address, and every test's browser is 127.0.0.1: the
    uploads of the journeys before count too. Its fixed one-minute window may also roll over once while
    this loops, so allow up to two windows' worth before calling the limit missing.
    """
    accepted = 0
    for index in range(22):
        page.goto("/search/")
        page.set_input_files(
            "#id_image", {"name": f"dress-{index}.jpg", "mimeType": "image/jpeg", "buffer": small_jpeg(index)}
        )
        watch.leave(page)
        with page.expect_navigation() as navigation:
            page.locator("#search-form button[type=submit]").click()
        response = navigation.value
        if response.status == 429:
            return response
        assert response.status == 200 and SEARCH_RESULTS_URL.search(page.url), (response.status, page.url)
        accepted += 1
    raise AssertionError(f"no 429 after {accepted} accepted uploads")


# --------------------------------------------------------------------------- axe and layout checks


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core's script, from node_modules (make install); the version package-lock.json pins."""
    lock = json.loads((REPO / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/axe-core"]["version"]
    installed = None
    if AXE_SCRIPT.is_file():
        installed = json.loads((AXE_PACKAGE / "package.json").read_text())["version"]
    if installed != pinned:
        problem = (
            f"axe-core {pinned} is not installed in node_modules (found {installed or 'none'}): "
            "`make install` installs it with npm ci where npm is on PATH"
        )
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(problem + "; REQUIRE_BROWSER is set (CI), so the accessibility checks must run")
        pytest.skip(problem)
    return AXE_SCRIPT.read_text()


# preload: media only. axe's other preload, the CSSOM, serves one rule (css-orientation-lock, experimental, so
# not among these tags), and to read a stylesheet with an @import (as Django's admin forms.css) it appends
# a <style> element, which `style-src 'self'` refuses: a CSP violation that would be axe's, not the shop's.
AXE_RUN = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"],
                                          preload: {assets: ["media"]}});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
    targets: v.nodes.map((n) => n.target.map((t) => Array.isArray(t) ? t.join(" >>> ") : t).join(" ")),
  }));
}"""


def axe_violations(page, axe_source: str) -> list[dict]:
    """axe's WCAG 2.0/2.1 A and AA violations on the page as it is now.

    Injected through DevTools (page.evaluate): a <script> tag (page.add_script_tag) would be inline
    script, which the shop's `script-src 'self'` refuses, and turning the policy off for these contexts
    (bypass_csp) would stop them checking it.
    """
    if not page.evaluate("() => typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        page.evaluate(axe_source)
    return page.evaluate(AXE_RUN, AXE_TAGS)


class AxeFindings:
    """Each page state's axe violations; fails on the serious and critical ones, listing them all."""

    def __init__(self) -> None:
        self.found: list[tuple[str, dict]] = []

    def check(self, page, axe_source: str, where: str) -> None:
        for violation in axe_violations(page, axe_source):
            self.found.append((where, violation))
        # Every finding, failing or not, for `pytest -rP` and the report.
        print(
            f"axe {where}: "
            + (
                ", ".join(f"{v['id']} ({v['impact']}, {v['count']})" for w, v in self.found if w == where)
                or "no violations"
            )
        )

    def assert_none_serious(self) -> None:
        failing = [(where, v) for where, v in self.found if v["impact"] in AXE_FAILING_IMPACTS]
        lines = [
            f"{where}: {v['id']} [{v['impact']}] {v['help']} ({v['count']} element{'s' if v['count'] != 1 else ''}: "
            + ", ".join(v["targets"][:4])
            + (", …" if v["count"] > 4 else "")
            + ")"
            for where, v in failing
        ]
        assert not failing, (
            "axe-core found serious or critical violations (WCAG 2.0/2.1 A and AA, best practice):\n" + "\n".join(lines)
        )


OVERFLOW = """() => {
  const root = document.documentElement, width = root.clientWidth;
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
    + (typeof e.className === "string" && e.className.trim() ? "." + e.className.trim().split(/\\s+/).join(".") : "");
  const path = (e) => { const parts = []; for (; e && e !== document.body && parts.length < 4; e = e.parentElement) parts.unshift(name(e)); return parts.join(" > "); };
  // The outermost elements that reach past the right edge: what makes the page scroll sideways.
  const culprits = [];
  for (const e of document.body.querySelectorAll("*")) {
    const r = e.getBoundingClientRect(), right = r.right + window.scrollX;
    if (!r.width || right <= width + 0.5) continue;
    const parent = e.parentElement.getBoundingClientRect();
    if (e.parentElement === document.body || parent.right + window.scrollX <= width + 0.5)
      culprits.push(`${path(e)} (right edge at ${Math.round(right)} px)`);
  }
  return {scrollWidth: root.scrollWidth, clientWidth: width, innerWidth: window.innerWidth, culprits: culprits.slice(0, 6)};
}"""


def horizontal_overflow(page) -> str | None:
    """Why the page scrolls sideways at its width, or None.

    scrollWidth is held to innerWidth and to clientWidth, the layout width less a vertical scroll bar:
    headless Chromium's overlay scroll bars take no room, so the two are equal here, but where a scroll
    bar takes room innerWidth alone would let an overflow of up to its width pass unnoticed.
    """
    measured = page.evaluate(OVERFLOW)
    if measured["scrollWidth"] <= measured["clientWidth"] and measured["scrollWidth"] <= measured["innerWidth"]:
        return None
    return (
        f"document scrollWidth {measured['scrollWidth']} > {measured['clientWidth']} (innerWidth "
        f"{measured['innerWidth']}); past the edge: " + ("; ".join(measured["culprits"]) or "(no element found)")
    )


def card_grid_problem(page, selector: str) -> str | None:
    """None when the grid's cards go two across: the first two side by side, the third on a new row."""
    cards = page.locator(f"{selector} a.card").evaluate_all(
        "cards => cards.slice(0, 3).map((c) => { const r = c.getBoundingClientRect(); "
        "return {x: Math.round(r.left), y: Math.round(r.top), width: Math.round(r.width)}; })"
    )
    assert len(cards) == 3, cards
    first, second, third = cards
    if second["x"] > first["x"] and second["y"] == first["y"] and third["x"] == first["x"] and third["y"] > first["y"]:
        return None
    return f"{selector}: the first three cards (left, top, width) are {[(c['x'], c['y'], c['width']) for c in cards]}"


def product_path(page) -> str:
    """A product page's path, the third card of the catalogue as in the first journey."""
    page.goto("/")
    return page.locator(".grid a.card").nth(2).evaluate("(a) => a.pathname")


def show_page(watch, kind: str, viewport: dict, demo_root: Path):
    """A page of the kind at the viewport's size: catalogue, product, search (with preview), results."""
    if kind == "results":
        path, state = finished_search(watch, demo_root)
        page = watch.new_page(viewport=viewport, storage_state=state)
        page.goto(path)
        expect(page.locator("#search-results a.card")).to_have_count(10)
        page.wait_for_function(
            "() => { const i = document.querySelector('#search-photo img.main'); return i && i.complete && i.naturalWidth > 0; }"
        )
        return page
    page = watch.new_page(viewport=viewport)
    if kind == "catalogue":
        page.goto("/")
        expect(page.locator(".grid a.card").first).to_be_visible()
    elif kind == "product":
        page.goto(product_path(page))
        expect(page.locator("#similar-items a.card")).to_have_count(10)
        page.wait_for_function(
            "() => { const i = document.querySelector('.product img.main'); return i && i.complete && i.naturalWidth > 0; }"
        )
    elif kind == "search":
        page.goto("/search/")
        choose_photo(page, street_photo(demo_root))
        page.evaluate("() => window.scrollTo(0, 0)")
    else:
        raise ValueError(kind)
    return page


# --------------------------------------------------------------------------- the journeys (in this order)


def test_it_shows_ten_similar_dresses_on_a_product_page(watch, demo_root):
    page = watch.new_page()
    page.goto("/")
    cards = page.locator(".grid a.card")
    expect(page.locator("h1")).to_have_text("Catalogue")
    assert cards.count() > 10
    listed = demo_listings(demo_root, "dresses") + demo_listings(demo_root, "skirts")
    expect(page.locator(".filters .count")).to_have_text(f"{listed} products")
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


def test_it_narrows_similar_items_to_a_colour_chosen_from_the_chips(watch):
    page = watch.new_page()
    page.goto("/?category=dresses")
    watch.leave(page)
    with page.expect_navigation():
        page.locator(".grid a.card").first.click()
    own = page.locator("#product-colours").inner_text().removeprefix("Colours: ").split(", ")
    chips = page.locator("#colour-chips a[data-colour]")
    offered = chips.evaluate_all("links => links.map((a) => a.dataset.colour)")
    assert offered, "no colour chips"
    expect(page.locator("#colour-any")).to_have_attribute("aria-current", "true")
    # "Like this, in another colour": a chip the product itself does not carry, if one is offered.
    colour = next((name for name in offered if name not in own), offered[0])
    watch.leave(page)
    with page.expect_navigation():
        chips.locator(f"text={colour}").first.click()
    assert f"colour={colour.replace(' ', '+')}" in page.url, page.url
    expect(page.locator("#similar-heading")).to_have_text(f"Similar items in {colour}")
    expect(page.locator(f'#colour-chips a[data-colour="{colour}"]')).to_have_attribute("aria-current", "true")
    hrefs = page.locator("#similar-items a.card").evaluate_all("cards => cards.map((c) => c.pathname)")
    assert 1 <= len(hrefs) <= 10 and len(set(hrefs)) == len(hrefs)
    screenshot(page, "product-colour")
    for href in hrefs:  # every item shown carries the colour chosen
        page.goto(href)
        assert colour in page.locator("#product-colours").inner_text().removeprefix("Colours: ").split(", "), href
    page.go_back()
    watch.leave(page)
    with page.expect_navigation():
        page.locator("#colour-any").click()
    expect(page.locator("#similar-items a.card")).to_have_count(10)
    watch.assert_clean()


def test_it_searches_skirts_when_the_shopper_chooses_skirts(watch, demo_root):
    pair = json.loads((demo_root / "meta" / "json" / "test_pairs_skirts.json").read_text())[0]
    page = watch.new_page()
    page.goto("/search/")
    expect(page.locator("#id_category")).to_have_value("dresses")
    page.select_option("#id_category", "skirts")
    choose_photo(page, demo_root / "photos" / f"{pair['photo']:09d}.jpg")
    for name in ("left", "top", "width", "height"):
        page.fill(f"#id_box_{name}", str(pair["bbox"][name]))
    submit_search(watch, page)
    expect(page.locator("#search-summary")).to_contain_text("closest skirts")
    titles = page.locator("#search-results a.card .meta div:first-child").all_inner_texts()
    assert len(titles) == 10 and all(title.endswith("skirt") for title in titles), titles
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
    # Only the box is outlined and tinted, not the whole photo under the overlay.
    overlay = searched.evaluate(
        "(s) => { const c = getComputedStyle(s); return [c.borderTopWidth, c.backgroundColor]; }"
    )
    assert overlay == ["0px", "rgba(0, 0, 0, 0)"], overlay
    screenshot(page, "results")
    watch.assert_clean()


def test_it_draws_the_box_with_a_finger(watch, demo_root):
    page = watch.new_page(has_touch=True)
    page.goto("/search/")
    preview = choose_photo(page, street_photo(demo_root))
    drag_with_finger(page, *corners(preview))

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


def test_it_searches_the_same_with_a_box_drawn_by_finger_or_by_mouse(watch, demo_root):
    # Two uploads of the rate limit's ten: this test runs before the refusal test, which counts on no
    # more than the window's limit being spent before it (the journeys above spend one).
    photo = demo_street_photo(demo_root)  # its search is reused by the page checks and their screenshots
    searches = {}
    for device in ("finger", "mouse"):
        page = watch.new_page(viewport=PHONE, has_touch=device == "finger")
        page.goto("/search/")
        preview = choose_photo(page, photo)
        # Whole CSS pixels: the same points on both pages, whatever either input rounds.
        start, end = ((round(x), round(y)) for x, y in corners(preview))
        (drag_with_finger if device == "finger" else drag_with_mouse)(page, start, end)
        expect(page.locator("#box")).to_be_visible()
        fields = box_fields(page)
        assert all(re.fullmatch(r"\d+", value) for value in fields), (device, fields)
        path = submit_search(watch, page, tap=device == "finger")
        searches[device] = {
            "preview": preview,
            "fields": fields,
            "path": path,
            "results": result_rows(page),
            "context": page.context,
        }
    finger, mouse = searches["finger"], searches["mouse"]
    assert finger["preview"] == mouse["preview"], "the two pages laid the preview out differently"
    assert finger["fields"] == mouse["fields"], f"box by finger {finger['fields']} != by mouse {mouse['fields']}"
    assert finger["path"] != mouse["path"]  # two searches, not one shown twice
    assert len(finger["results"]) == 10 and finger["results"] == mouse["results"], (finger["results"], mouse["results"])
    # Either is a finished search the layout checks below may look at without spending an upload.
    _FINISHED_SEARCH.setdefault(watch.base, (mouse["path"], mouse["context"].storage_state()))
    watch.assert_clean()


def test_it_takes_a_box_typed_with_the_keyboard_and_draws_it(watch, demo_root):
    page = watch.new_page()
    page.goto("/search/")
    choose_photo(page, demo_street_photo(demo_root))
    page.focus("#id_box_left")
    for value in ("40", "60", "200", "300"):  # left, top, width, height: Tab moves between the fields
        page.keyboard.type(value)
        page.keyboard.press("Tab")
    expect(page.locator("#box-label")).to_have_text("Box: 200×300 px at (40, 60).")
    expect(page.locator("#box")).to_be_visible()
    drawn = page.locator("#box").bounding_box()
    preview = page.locator("#preview")
    scale = preview.evaluate("(i) => i.width / i.naturalWidth")
    assert abs(drawn["width"] - 200 * scale) <= 2 and abs(drawn["height"] - 300 * scale) <= 2, (drawn, scale)
    expect(page.locator("#box-label")).to_have_attribute("aria-live", "polite")
    page.locator("#clear-box").click()
    assert box_fields(page) == ["", "", "", ""]
    expect(page.locator("#box")).to_be_hidden()
    watch.assert_clean()


def test_it_searches_without_javascript(watch, demo_root):
    """The form, the typed box and the results page's <noscript> refresh: a search with JavaScript off."""
    page = watch.new_page(java_script_enabled=False)
    page.goto("/search/")
    page.set_input_files("#id_image", str(demo_street_photo(demo_root)))
    for name, value in zip(("left", "top", "width", "height"), ("10", "20", "300", "400")):
        page.fill(f"#id_box_{name}", value)
    with page.expect_navigation():
        page.locator("#search-form button[type=submit]").click()
    assert SEARCH_RESULTS_URL.search(page.url), page.url
    # Pending, the page reloads itself through <noscript><meta refresh> until the search is over.
    expect(page.locator("#search-results a.card")).to_have_count(10, timeout=180_000)
    expect(page.locator("#searched-box rect")).to_have_count(1)
    expect(page.get_by_text("Searched the boxed area: 300×400 px at (10, 20).")).to_be_visible()
    watch.assert_clean()


@pytest.mark.parametrize("kind", ["catalogue", "product", "search", "results"])
def test_it_never_scrolls_sideways_on_a_narrow_screen(watch, demo_root, kind):
    problems = []
    for width in (320, 390, 768):
        page = show_page(watch, kind, {"width": width, "height": 800}, demo_root)
        problem = horizontal_overflow(page)
        if problem:
            problems.append(f"{kind} page at {width} px: {problem}")
        watch.leave(page)
    assert not problems, "\n".join(problems)
    watch.assert_clean()


@pytest.mark.parametrize(
    ("kind", "grid", "shot"),
    [("product", "#similar-items", "phone-product"), ("results", "#search-results", "phone-results")],
)
def test_it_shows_similar_items_and_results_two_across_on_a_phone(watch, demo_root, kind, grid, shot):
    page = show_page(watch, kind, PHONE, demo_root)
    screenshot(page, shot, jpeg=True)  # before the check: the picture shows what a failure looked like
    problem = card_grid_problem(page, grid)
    assert problem is None, f"at {PHONE['width']} px the cards should go two across: {problem}"
    watch.assert_clean()


@pytest.mark.parametrize("kind", ["catalogue", "product", "search", "results"])
def test_it_has_no_serious_accessibility_violations_on_shop_pages(axe_source, watch, demo_root, kind):
    findings = AxeFindings()
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        if kind == "search":
            page = watch.new_page(viewport=viewport)
            page.goto("/search/")
            findings.check(page, axe_source, f"search page, {name}")
            preview = choose_photo(page, street_photo(demo_root))
            drag_with_mouse(page, *corners(preview))
            expect(page.locator("#box")).to_be_visible()
            findings.check(page, axe_source, f"search page with a photo and a box, {name}")
        else:
            page = show_page(watch, kind, viewport, demo_root)
            findings.check(page, axe_source, f"{kind} page, {name}")
        watch.leave(page)
    findings.assert_none_serious()
    watch.assert_clean()  # and axe, evaluated through DevTools, set off no CSP violation


def admin_login(watch, page) -> None:
    page.goto("/admin/")
    expect(page.locator("#id_username")).to_be_visible()  # redirected to the login form
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw")
    watch.leave(page)
    with page.expect_navigation():
        page.locator("#login-form input[type=submit]").click()
    assert urlsplit(page.url).path == "/admin/", page.url


def test_it_has_no_serious_accessibility_violations_on_the_admin_run_page(axe_source, watch, indexed_catalogue):
    # The active version's page: a finished run, which does not reload itself while axe looks.
    findings = AxeFindings()
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = watch.new_page(viewport=viewport)
        admin_login(watch, page)
        page.goto(f"/admin/shop/modelversion/{indexed_catalogue.pk}/change/")
        expect(page.locator(".field-status .readonly")).to_have_text("Active")
        findings.check(page, axe_source, f"admin run page, {name}")
        watch.leave(page)
    findings.assert_none_serious()
    watch.assert_clean()


def test_it_shows_a_friendly_page_past_the_rate_limit(watch):
    # Every upload of the tests above counts in the same per-address window (see post_until_refused).
    page = watch.new_page()
    # Chromium logs every 4xx document to the console; this one is the point of the test.
    watch.allowed_console.append(re.compile(r"^Failed to load resource: the server responded with a status of 429 "))
    refused = post_until_refused(watch, page)
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


def test_it_has_no_serious_accessibility_violations_on_the_refusal_page(axe_source, watch):
    # Right after the rate-limit test: its window is usually still full, so the first upload is refused.
    page = watch.new_page(viewport=DESKTOP)
    watch.allowed_console.append(re.compile(r"^Failed to load resource: the server responded with a status of 429 "))
    post_until_refused(watch, page)
    expect(page.locator("#refused")).to_have_attribute("data-status", "429")
    findings = AxeFindings()
    findings.check(page, axe_source, "429 page, desktop")
    page.set_viewport_size(PHONE)  # the refusal is a POST's answer: resized rather than asked for again
    findings.check(page, axe_source, "429 page, phone")
    findings.assert_none_serious()
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
    admin_login(watch, page)

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
