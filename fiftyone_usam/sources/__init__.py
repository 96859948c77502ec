"""Training images from class names: single-object images, one label each.

Two sources (`SOURCES`), one dataset layout (`fiftyone_io.training_dataset`):

- ``synthetic`` (`stages.generate`): a diffusers text-to-image pipeline (Stable Diffusion v1.4
  by default), one deterministic seed per image, resumable (`jobs`, `pipelines`, `generation`).
- ``crawl`` (`stages.crawl`): web images (icrawler's search engines, or a file of URLs), each
  download validated and de-duplicated before it is kept (`engines`, `fetch`, `validation`,
  `collector`).

Nothing heavy is imported here: diffusers, torch, icrawler and requests are imported inside the
functions that use them.
"""

from typing import Literal

Source = Literal["synthetic", "crawl"]
SOURCES: tuple[str, ...] = ("synthetic", "crawl")
