"""Our own file names for training images.

File names never come from a URL or a prompt: a class gets an ASCII folder name (its *slug*),
and each image a name built from what identifies it (a content hash, or a generation recipe and
index).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(name: str) -> str:
    """An ASCII folder name for a class: ``"Potted Plant"`` -> ``"potted-plant"``.

    Names with no ASCII letter or digit (``"猫"``) get ``class-<8 hex digits of their hash>``.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:60].strip("-")
    return text or "class-" + hashlib.sha256(name.encode()).hexdigest()[:8]
