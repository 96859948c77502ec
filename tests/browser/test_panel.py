"""The U-SAM panel in the App's grid: opened from the new-panel menu, it shows the run, and its
"Review the most uncertain first" button sorts the grid by ``usam_uncertainty``, most uncertain
first. Screenshot: ``app-panel.png``."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.test_app import open_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def labelled(plugins_dir, image_files, tiny_head, tiny_checkpoint):
    """The six test images labelled under ``usam`` in a persistent dataset (the App server is
    another process), with the plugin linked into FiftyOne's plugins directory."""
    import fiftyone as fo

    from fiftyone_usam.stages.predict import predict

    dataset = fo.Dataset(f"usam-browser-panel-{uuid.uuid4().hex[:8]}")
    dataset.persistent = True
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in image_files])
    predict(
        dataset,
        head=tiny_head,
        checkpoint=tiny_checkpoint,
        threshold=0.0,
        device="cpu",
        progress=False,
    )
    yield dataset
    fo.delete_dataset(dataset.name)


def open_panel(page):
    """Opens the U-SAM panel beside the grid from the new-panel ("+") menu; returns it."""
    from playwright.sync_api import expect

    page.locator('[data-cy="new-panel-btn"]').first.click()
    page.locator('[data-cy="new-panel-option-usam_panel"]').click()
    expect(page.locator('[data-cy="panel-tab-usam_panel"]')).to_have_text("U-SAM")
    panel = page.locator('[data-cy="panel-content-usam_panel"]')
    expect(panel).to_be_visible()
    return panel


def grid_order(page, tiles) -> list[str]:
    """The sample ids of the grid's tiles in order, read from the URL of each opened sample."""
    from playwright.sync_api import expect

    ids = []
    modal = page.locator('[data-cy="modal"]')
    for i in range(tiles.count()):
        tile = tiles.nth(i)
        box = tile.bounding_box()
        # off the centre: on these small tiles the centre can hit the selection checkbox
        tile.click(position={"x": box["width"] * 0.7, "y": box["height"] * 0.75})
        modal.locator('[data-cy="modal-looker-container"] canvas').wait_for()
        expect(page).to_have_url(re.compile(r"[?&]id=\w+"))
        ids.append(parse_qs(urlsplit(page.url).query)["id"][0])
        page.keyboard.press("Escape")
        expect(modal).to_have_count(0)
    return ids


def test_review_uncertain_sorts_the_grid_most_uncertain_first(page, app_url, labelled, artifacts):
    from playwright.sync_api import expect

    expected = labelled.sort_by("usam_uncertainty", reverse=True).values("id")
    assert labelled.values("id") != expected, "the samples are already in uncertainty order"
    tiles = open_dataset(page, app_url, labelled)
    panel = open_panel(page)
    instances = labelled.count("usam_instances.detections")
    expect(panel).to_contain_text(f"labelled: 6 of 6 samples, {instances} instances")
    expect(panel.locator(".js-plotly-plot")).to_have_count(1)  # the confidence histogram
    panel.get_by_role("button", name="Review the most uncertain first").click()
    view_bar = page.locator('[data-cy="view-bar"]')
    expect(view_bar).to_contain_text("SortBy")
    expect(view_bar).to_contain_text("usam_uncertainty")
    expect(tiles.locator('canvas[canvas-loaded="true"]')).to_have_count(len(labelled))
    page.screenshot(path=artifacts / "app-panel.png")
    assert grid_order(page, tiles) == expected
