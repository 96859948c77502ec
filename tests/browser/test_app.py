"""The FiftyOne App shows what `predict` wrote: the label fields in the sidebar, masks on the
samples of the grid and in an opened sample. Screenshots: ``app-grid.png``, ``app-sample.png``."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LABEL_FIELDS = ("usam_semantic", "usam_instances")


@pytest.fixture(scope="module")
def labelled(image_files, tiny_head, tiny_checkpoint):
    """The six test images labelled by the tiny SAM and head, in a persistent dataset (the App
    server is another process)."""
    import fiftyone as fo

    from fiftyone_usam.stages.predict import predict

    dataset = fo.Dataset(f"usam-browser-{uuid.uuid4().hex[:8]}")
    dataset.persistent = True
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in image_files])
    # threshold 0: the head is barely trained, and the test wants masks to look at
    report = predict(
        dataset,
        head=tiny_head,
        field="usam",
        checkpoint=tiny_checkpoint,
        threshold=0.0,
        device="cpu",
        progress=False,
    )
    assert report.labelled == len(dataset)
    assert sum(len(d.detections) for d in dataset.values("usam_instances")) > 0
    yield dataset
    fo.delete_dataset(dataset.name)


def open_dataset(page, app_url: str, dataset):
    """Opens the dataset's grid and waits until every sample's tile is drawn; returns the tiles."""
    from playwright.sync_api import expect

    page.goto(f"{app_url}/datasets/{dataset.name}", wait_until="load")
    tiles = page.locator('[data-cy="fo-grid"] [data-cy="looker"]')
    expect(tiles.locator('canvas[canvas-loaded="true"]')).to_have_count(len(dataset))
    # the server keeps the App's state for every client: a sample left open by an earlier page
    # reopens here, over the grid
    modal = page.locator('[data-cy="modal"]')
    if modal.count():
        page.keyboard.press("Escape")
        expect(modal).to_have_count(0)
    return tiles


def show(page, field: str, shown: bool = True) -> None:
    """Ticks (or unticks) a label field's checkbox in the sidebar."""
    from playwright.sync_api import expect

    box = page.locator(f'[data-cy="checkbox-{field}"]')
    if box.locator("input").is_checked() != shown:
        box.click()
    expect(box.locator("input")).to_be_checked(checked=shown)


def settled(element, timeout_s: float = 20) -> bytes:
    """A screenshot of ``element`` once two in a row, half a second apart, are the same."""
    deadline = time.monotonic() + timeout_s
    last = element.screenshot()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = element.screenshot()
        if now == last:
            return now
        last = now
    raise AssertionError(f"{element} kept changing for {timeout_s} s")


def test_sidebar_lists_the_label_fields_and_the_grid_draws_them(page, app_url, labelled, artifacts):
    from playwright.sync_api import expect

    open_dataset(page, app_url, labelled)
    expect(page.locator('[data-cy="entry-counts"]')).to_have_text(f"{len(labelled)} samples")
    for field in LABEL_FIELDS:
        expect(page.locator(f'[data-cy="sidebar-field-{field}"]')).to_have_text(field)
    grid = page.locator('[data-cy="fo-grid"]')
    for field in LABEL_FIELDS:
        show(page, field, False)
    bare = settled(grid)
    for field in LABEL_FIELDS:
        show(page, field)
    assert settled(grid) != bare, "showing the label fields changed nothing in the grid"
    page.screenshot(path=artifacts / "app-grid.png")


def test_an_opened_sample_shows_its_labels(page, app_url, labelled, artifacts):
    from playwright.sync_api import expect

    tiles = open_dataset(page, app_url, labelled)
    for field in LABEL_FIELDS:
        show(page, field)
    tiles.first.click()
    modal = page.locator('[data-cy="modal"]')
    modal.locator('[data-cy="modal-looker-container"] canvas').wait_for()
    expect(page).to_have_url(re.compile(r"[?&]id=\w+"))  # the App names the opened sample here
    sample = labelled[parse_qs(urlsplit(page.url).query)["id"][0]]
    assert sample.filepath in modal.inner_text()
    for field, count in (
        ("usam_semantic", 1),
        ("usam_instances", len(sample.usam_instances.detections)),
    ):
        entry = modal.locator(f'[data-cy="sidebar-field-container-{field}"]')
        expect(entry.locator('[data-cy="entry-count-all"]')).to_have_text(str(count))
    settled(modal.locator('[data-cy="modal-looker-container"]'))
    page.screenshot(path=artifacts / "app-sample.png")
