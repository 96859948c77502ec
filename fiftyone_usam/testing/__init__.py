"""Tiny random models and planted data for the demo, the tests and the benchmarks.

Like diffusers' ``testing_utils``: everything here is built from the libraries' own classes
with random weights (no model hub), or planted so that the right answer is known. Nothing in the
library imports this package except ``stages/demo.py``.

- `sam`: a tiny SAM (encoder width 64, input 256) and its checkpoint with its variant config.
- `pipelines`: a tiny random Stable Diffusion pipeline and a byte-level CLIP tokenizer.
- `clip`: a tiny random CLIP model and processor, saved for ``--clip-model DIR``.
- `planted`: bags of mask embeddings with a planted class signal.
- `scenes`: simple scenes (shapes on noise) and the demo's dataset of them with ground truth.
"""
