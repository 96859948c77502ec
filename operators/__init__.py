"""FiftyOne operators of the U-SAM plugin. Thin: each reads its params and makes one library call.

FiftyOne imports this module whenever it builds its operator registry, so nothing heavy is
imported here; the library is imported inside ``execute``.
"""

from .embed import EmbedOperator


def register(p):
    """Registers the plugin's operators (every one must also be listed in fiftyone.yml)."""
    p.register(EmbedOperator)
