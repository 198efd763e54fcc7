"""The page in a real headless Chromium (Debian's), against the real stack."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect
from werkzeug.serving import WSGIRequestHandler, make_server

from harness import free_port, valid_images



def test_upload_two_images_and_see_both_results(browser, live_server):
    page = browser.new_page()
    page.goto(live_server)
    expect(page.locator("h1")).to_contain_text("Sport Image Classifier")
    photos = valid_images(2, start=11)
    page.set_input_files("#file-input", [str(path) for path, _ in photos])
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(2, timeout=30_000)
    display_names = page.evaluate("fetch('/api/v1/classes').then(r => r.json()).then(b => b.display_names)")
    for i in range(len(photos)):
        card = page.locator(".result-card").nth(i)
        expect(card.locator(".top3-row")).to_have_count(3)
        assert card.locator(".top1-label").inner_text() in display_names.values()
    expect(page.locator("#model-info")).to_contain_text("sports100")


def test_the_page_loads_with_no_failed_request(browser, live_server):
    """Everything the page asks for is there, its icon too (fetched here: Playwright does not
    report the browser's own icon requests), so the console stays clean."""
    page = browser.new_page()
    answers = []
    page.on("response", lambda response: answers.append((response.status, response.url)))
    page.goto(live_server)
    expect(page.locator("#model-info")).to_contain_text("sports100")
    page.wait_for_load_state("networkidle")
    assert [(status, url) for status, url in answers if status >= 400] == []
    for icon in ("document.querySelector('link[rel=icon]').href", "'/favicon.ico'"):
        assert page.evaluate(f"fetch({icon}).then(r => r.ok && r.headers.get('content-type'))").startswith("image/svg")


def test_bad_file_gets_a_clear_message(browser, live_server, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not a photo at all")
    page = browser.new_page()
    page.goto(live_server)
    page.set_input_files("#file-input", [str(bad)])
    card = page.locator('.result-card[data-filename="holiday.jpg"]')
    expect(card).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(card.locator(".card-error")).to_contain_text("not a readable image")


def test_a_large_selection_is_split_to_fit_the_limits(browser, tight_server, tight_limits, tmp_path):
    """Seven photos where a request may hold 3 files and 100 KB, and one file over the per-image
    limit: the photos go in several requests and are all classified; the big file fails alone."""
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff" * (tight_limits["max_image_bytes"] + 1))
    page = browser.new_page()
    page.goto(tight_server)
    page.set_input_files("#file-input", [str(path) for path, _ in valid_images(7, start=40)] + [str(huge)])
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(7, timeout=30_000)
    card = page.locator('.result-card[data-filename="huge.jpg"]')
    expect(card).to_have_attribute("data-status", "failed")
    expect(card.locator(".card-error")).to_contain_text("over the limit of 0.1 MB")
    expect(page.locator("#messages")).to_be_empty()


def test_phone_layout_and_keyboard(browser, live_server):
    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.goto(live_server)
    path, _ = valid_images(1, start=20)[0]
    page.set_input_files("#file-input", [str(path)])
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(1, timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.keyboard.press("Tab")  # the first stop of the keyboard is the drop zone
    assert page.evaluate("document.activeElement.id") == "drop-zone"
    # Enter and Space open the picker (counted here, and the dialog itself prevented).
    page.evaluate("window.picks = 0; document.getElementById('file-input')"
                  ".addEventListener('click', e => { window.picks++; e.preventDefault(); })")
    page.keyboard.press("Enter")
    page.keyboard.press(" ")
    assert page.evaluate("window.picks") == 2


# ---------- The controls, at a desktop's size and a phone's ----------

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SIZES = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
SAMPLES = {"surfing.jpg": "Surfing", "archery.jpg": "Archery", "mushing.jpg": "Mushing", "table-tennis.jpg": "Table Tennis"}
SAVED = "sport-classifier.photos"  # the page's sessionStorage key


def classify_samples(page: Page) -> None:
    page.get_by_role("button", name="Try four sample photos").click()
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(len(SAMPLES), timeout=30_000)


def shown_labels(page: Page) -> dict[str, str]:
    """Each card's file name and the sport it puts first, as the page shows them."""
    cards = page.locator(".result-card")
    return {cards.nth(i).get_attribute("data-filename"): cards.nth(i).locator(".top1-label").inner_text()
            for i in range(cards.count())}


def assert_thumbnail_shown(card: Locator) -> None:
    img = card.locator(".thumb img")
    expect(img).to_have_js_property("complete", True)  # thumbnails are drawn after the card appears
    assert img.evaluate("img => img.naturalWidth") > 0


@SIZES
def test_a_portrait_photo_keeps_the_thumbnail_size_of_the_others(browser, live_server, viewport, tmp_path):
    """A tall photo among wide ones: every thumbnail is drawn at one size (the photo cropped to it),
    so a tall one does not stretch its card and leave the rest of its row half empty."""
    (path, _), = valid_images(1, start=5)
    tall = tmp_path / "portrait.jpg"
    with Image.open(path) as photo:
        photo.crop((photo.width // 3, 0, 2 * photo.width // 3, photo.height)).resize((200, 600)).save(tall)
    page = browser.new_page(viewport=viewport)
    page.goto(live_server)
    page.set_input_files("#file-input", [str(p) for p, _ in valid_images(2, start=3)] + [str(tall)])
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(3, timeout=30_000)
    for card in page.locator(".result-card").all():
        assert_thumbnail_shown(card)
    sizes = {(round(box["width"]), round(box["height"]))
             for box in (thumb.bounding_box() for thumb in page.locator(".result-card .thumb").all())}
    assert len(sizes) == 1, sizes


@SIZES
def test_sample_photos_show_their_sports_times_and_the_models_accuracy(browser, live_server, app, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(live_server)
    classify_samples(page)
    assert shown_labels(page) == SAMPLES
    for card in page.locator(".result-card").all():
        expect(card.locator(".card-time")).to_have_text(re.compile(r"^\d+\.\d s$"))
        assert_thumbnail_shown(card)
    card = app.extensions["model_card"]
    accuracy = card["metrics"]["valid"]
    footer = page.locator("#model-info")
    expect(footer).to_contain_text(card["name"])
    expect(footer).to_contain_text(f"{accuracy['top1'] * 100:.1f}% right first time")
    expect(footer).to_contain_text(f"{accuracy['images']} held-out photos")
    real = card["metrics"]["wild-dev"]
    expect(footer).to_contain_text(f"on {real['images']} real-world photos: {real['top1'] * 100:.1f}% right first time")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_phone_shows_several_compact_cards_on_one_screen(browser, live_server):
    page = browser.new_page(viewport=PHONE)
    page.goto(live_server)
    classify_samples(page)
    assert page.evaluate("window.scrollY") == 0  # what a person sees right after the upload
    boxes = [card.bounding_box() for card in page.locator(".result-card").all()]
    on_screen = [b for b in boxes if b["y"] >= 0 and b["y"] + b["height"] <= PHONE["height"]]
    assert len(on_screen) >= 3, boxes
    for card in page.locator(".result-card").all():  # the thumbnail sits beside the top-3
        thumb, top3 = card.locator(".thumb").bounding_box(), card.locator(".top3").bounding_box()
        assert thumb["x"] + thumb["width"] <= top3["x"]
        assert thumb["y"] < top3["y"] + top3["height"] and top3["y"] < thumb["y"] + thumb["height"]


@SIZES
def test_download_csv_and_json(browser, live_server, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(live_server)
    classify_samples(page)
    labels = shown_labels(page)
    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Download CSV").click()
    assert csv_download.value.suggested_filename == "sport-results.csv"
    rows = list(csv.DictReader(open(csv_download.value.path(), newline="")))
    assert {row["file"]: row["top1"] for row in rows} == labels
    for row in rows:
        assert row["status"] == "done" and row["error"] == ""
        assert 1 >= float(row["p1"]) >= float(row["p2"]) >= float(row["p3"]) >= 0 and float(row["seconds"]) >= 0
    cards = page.locator(".result-card")
    sure = {cards.nth(i).get_attribute("data-filename"): "is-unsure" not in cards.nth(i).get_attribute("class")
            for i in range(cards.count())}  # what the page shows: a plain answer, or "Not sure: maybe ..."
    assert {row["file"]: row["confident"] for row in rows} == {name: "yes" if s else "no" for name, s in sure.items()}
    with page.expect_download() as json_download:
        page.get_by_role("button", name="Download JSON").click()
    results = json.loads(open(json_download.value.path()).read())
    assert {r["file"]: r["top3"][0]["display_name"] for r in results} == labels
    assert all(r["status"] == "done" and len(r["top3"]) == 3 and r["error"] is None for r in results)
    assert {r["file"]: r["confident"] for r in results} == sure


@SIZES
def test_results_survive_a_reload(browser, live_server, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(live_server)
    classify_samples(page)
    before = shown_labels(page)
    asked = []
    page.on("request", lambda request: asked.append(request.url) if "/api/v1/jobs/" in request.url else None)
    page.reload()
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(len(SAMPLES), timeout=30_000)
    assert shown_labels(page) == before
    assert asked, "the results are asked for again after the reload"
    for card in page.locator(".result-card").all():
        assert_thumbnail_shown(card)


@SIZES
def test_clear_removes_every_card_for_good(browser, live_server, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(live_server)
    classify_samples(page)
    page.get_by_role("button", name="Clear").click()
    expect(page.locator(".result-card")).to_have_count(0)
    expect(page.locator("#empty-note")).to_be_visible()
    expect(page.get_by_role("button", name="Download CSV")).to_be_disabled()
    page.reload()
    expect(page.locator("#empty-note")).to_be_visible()
    expect(page.locator(".result-card")).to_have_count(0)


class RestartableServer:
    """The app on a fixed port that can go away and come back. HTTP/1.0, so that no kept-alive
    connection outlives a stop and the browser meets a server that is really gone."""

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.0"

    def __init__(self, app):
        self.app, self.port = app, free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True, request_handler=self.Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@SIZES
def test_retry_failed_sends_the_failed_photos_again(browser, app, worker, viewport):
    server = RestartableServer(app)
    server.start()
    page = browser.new_page(viewport=viewport)
    page.goto(server.url)
    photos = valid_images(2, start=60)
    server.stop()
    try:
        page.set_input_files("#file-input", [str(path) for path, _ in photos])
        expect(page.locator('.result-card[data-status="failed"]')).to_have_count(2, timeout=30_000)
        expect(page.locator(".card-error").first).to_contain_text("Could not reach the server")
    finally:
        server.start()
    page.get_by_role("button", name="Retry failed").click()
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(2, timeout=30_000)
    expect(page.locator(".result-card .top3-row")).to_have_count(6)
    expect(page.get_by_role("button", name="Retry failed")).to_be_disabled()
    server.stop()


@SIZES
def test_paste_an_image_from_the_clipboard(browser, live_server, viewport):
    context = browser.new_context(viewport=viewport, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(live_server)
    path, _ = valid_images(1, start=70)[0]
    png = io.BytesIO()
    Image.open(path).save(png, "PNG")  # the clipboard holds images as PNG
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        await navigator.clipboard.write([new ClipboardItem({'image/png': new Blob([bytes], {type: 'image/png'})})]);
    }""", base64.b64encode(png.getvalue()).decode())
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+V")
    card = page.locator(".result-card")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "done", timeout=30_000)
    expect(card).to_have_attribute("data-filename", re.compile(r"^pasted-.*\.png$"))
    expect(card.locator(".top3-row")).to_have_count(3)
    context.close()


def test_a_reload_while_a_job_waits_picks_it_up_with_a_long_poll(browser, live_server, worker):
    """The worker paused: the job is still queued when the page reloads; the reloaded page
    long-polls it and shows its result once the worker goes on."""
    page = browser.new_page()
    page.goto(live_server)
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "/api/v1/jobs/" in request.url else None)
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        page.set_input_files("#file-input", [str(valid_images(1, start=80)[0][0])])
        saved = f"(JSON.parse(sessionStorage.getItem('{SAVED}')) || []).some(p => p.statusUrl)"
        for _ in range(300):  # the job accepted and its id saved (wait_for_function needs eval, which the CSP forbids)
            if page.evaluate(saved):
                break
            page.wait_for_timeout(100)
        else:
            pytest.fail("the page never saved the job's id")
        page.reload()
        expect(page.locator(".result-card")).to_have_attribute("data-status", "queued")
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
    expect(page.locator(".result-card")).to_have_attribute("data-status", "done", timeout=60_000)
    expect(page.locator(".result-card .top3-row")).to_have_count(3)
    assert polls and all(re.search(r"[?&]wait=\d", url) for url in polls), polls


def test_screenshots(browser, live_server, tmp_path):
    """PNGs of the page with the samples classified, at both sizes. With SCREENSHOT_DIR set
    (docs/screenshots for the README) they are written there."""
    out = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    # The desktop's whole page (its cards are below the fold); the phone's first screen.
    for name, viewport, full_page in [("page-desktop.png", DESKTOP, True), ("page-phone.png", PHONE, False)]:
        page = browser.new_page(viewport=viewport, color_scheme="light")
        page.goto(live_server)
        classify_samples(page)
        shot = Image.open(io.BytesIO(page.screenshot(full_page=full_page, animations="disabled", caret="hide")))
        # 256 colours: a third of the bytes in the repository, no loss a reader would see.
        shot.convert("RGB").quantize(256).save(out / name, optimize=True)
        width, height = Image.open(out / name).size
        assert width == viewport["width"] and height >= viewport["height"]
        page.close()


def test_an_unsure_answer_reads_not_sure_maybe(browser, live_server, settings, tmp_path):
    """A picture of no sport: the model's calibrated first answer falls below the card's threshold."""
    from common.preprocess import preprocess
    from ml.nonsport import non_sport_photos  # no torch: pictures from scikit-image and drawn here
    from worker.inference import Classifier

    photos = non_sport_photos()
    classifier = Classifier(settings.model_path, str(settings.model_card_path), threads=1)
    unsure = [name for name, data in photos.items()
              if not classifier.predict(preprocess(data, classifier.prep, settings.max_pixels)[None])[0]["confident"]]
    assert unsure, "every non-sport picture came out confident"
    path = tmp_path / f"{unsure[0]}.jpg"
    path.write_bytes(photos[unsure[0]])
    page = browser.new_page()
    page.goto(live_server)
    page.set_input_files("#file-input", [str(path)])
    card = page.locator('.result-card[data-status="done"]')
    expect(card).to_have_count(1, timeout=30_000)
    expect(card.locator(".not-sure")).to_have_text(re.compile(r"^Not sure: maybe .+, .+ or .+$"))
    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Download CSV").click()
    row, = csv.DictReader(open(csv_download.value.path(), newline=""))
    assert row["file"] == path.name and row["confident"] == "no"
    page.close()
