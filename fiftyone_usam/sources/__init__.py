"""Training images from class names: a FiftyOne dataset of single-object images, one label each.

Two sources, one dataset layout (see `training_dataset`):

- `synthetic.generate`: a diffusers text-to-image pipeline (Stable Diffusion v1.4 by default),
  one deterministic seed per image, resumable.
- `crawled.crawl`: web images (icrawler's search engines, or a file of URLs), each download
  validated and de-duplicated before it enters the dataset.

Nothing heavy is imported here: diffusers, torch, icrawler and requests are imported inside the
functions that use them.
"""
