"""The page in a real headless Chromium (Debian's), against the real stack."""
from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from harness import valid_images

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


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
