"""FiftyOne operators of the U-SAM plugin. Thin: each reads its params and makes one library call.

FiftyOne imports this module whenever it builds its operator registry, so nothing heavy is
imported here: the forms use torch-free library modules (enumerations, ``head.json`` and
``spec.json`` readers, the store locator), and each stage is imported inside ``execute``.
"""

from .adapt import AdaptOperator
from .crawl import CrawlOperator
from .embed import EmbedOperator
from .evaluate import EvaluateOperator
from .generate import GenerateOperator
from .panel import USAMPanel
from .predict import PredictOperator
from .refine import RefineOperator
from .run import RunOperator
from .train import TrainOperator


def register(p):
    """Registers the plugin's operators and its panel (every one must also be listed in
    fiftyone.yml)."""
    p.register(GenerateOperator)
    p.register(CrawlOperator)
    p.register(EmbedOperator)
    p.register(TrainOperator)
    p.register(AdaptOperator)
    p.register(PredictOperator)
    p.register(RefineOperator)
    p.register(EvaluateOperator)
    p.register(RunOperator)
    p.register(USAMPanel)
