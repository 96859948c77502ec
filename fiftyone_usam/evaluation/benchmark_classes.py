"""The class lists of the paper's benchmarks, PASCAL VOC 2012 and COCO 2017, as ontologies.

Pure (no FiftyOne): `fiftyone_usam.stages.benchmarks` imports the benchmarks' files with them,
and a head is trained on them (``usam.voc_ontology(superclasses=True)``).
"""

from __future__ import annotations

from fiftyone_usam.ontology import ClassSpec, Ontology

__all__ = [
    "COCO_CLASSES",
    "COCO_SUPERCATEGORIES",
    "VOC_CLASSES",
    "VOC_OFFICIAL_NAMES",
    "VOC_SUPERCLASSES",
    "coco_ontology",
    "voc_ontology",
]

# VOC's official names, index i = class id i + 1 (0 is background, 255 boundary/ignore).
VOC_OFFICIAL_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
_VOC_SPELLINGS = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
}
# Our labels: the official names with the three run-together ones split into words (better text
# prompts and search queries); VOC_CLASSES[i] is official class id i + 1, as VOC_OFFICIAL_NAMES[i].
VOC_CLASSES = tuple(_VOC_SPELLINGS.get(name, name) for name in VOC_OFFICIAL_NAMES)
_VOC_SYNONYMS = {
    "aeroplane": ("airplane",),
    "motorbike": ("motorcycle",),
    "sofa": ("couch",),
    "tv monitor": ("television", "computer monitor"),
    "potted plant": ("houseplant",),
}
# The five VOC superclasses of the U-SAM paper.
VOC_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "animals": ("bird", "cat", "cow", "dog", "horse", "sheep"),
    "furniture": ("chair", "dining table", "sofa"),
    "household items": ("bottle", "potted plant", "tv monitor"),
    "person": ("person",),
    "transportation": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
}

# The 80 COCO 2017 thing categories in category-id order (ids 1..90 with gaps; the semantic
# maps here number them 1..80 in this order).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COCO_SUPERCATEGORIES: dict[str, tuple[str, ...]] = {
    "person": ("person",),
    "vehicle": ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
    "outdoor": ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
    "animal": COCO_CLASSES[14:24],
    "accessory": ("backpack", "umbrella", "handbag", "tie", "suitcase"),
    "sports": COCO_CLASSES[29:39],
    "kitchen": ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
    "food": COCO_CLASSES[46:56],
    "furniture": ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
    "electronic": ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
    "appliance": ("microwave", "oven", "toaster", "sink", "refrigerator"),
    "indoor": ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
}


def voc_ontology(superclasses: bool = False) -> Ontology:
    """The 20 VOC classes in official id order (`VOC_CLASSES`), with search synonyms.

    Args:
        superclasses: also group the classes into the paper's five `VOC_SUPERCLASSES` (for
            ``train_head(superclasses=True)``, ``predict(groups=...)`` and
            ``Ontology.to_superclasses()``).
    """
    group = {name: g for g, names in VOC_SUPERCLASSES.items() for name in names}
    return Ontology(
        tuple(
            ClassSpec(
                name,
                synonyms=_VOC_SYNONYMS.get(name, ()),
                superclass=group[name] if superclasses else None,
            )
            for name in VOC_CLASSES
        )
    )


def coco_ontology(superclasses: bool = False) -> Ontology:
    """The 80 COCO classes in category-id order (`COCO_CLASSES`).

    Args:
        superclasses: also group them into COCO's 12 supercategories (`COCO_SUPERCATEGORIES`).
    """
    group = {name: g for g, names in COCO_SUPERCATEGORIES.items() for name in names}
    return Ontology(
        tuple(ClassSpec(n, superclass=group[n] if superclasses else None) for n in COCO_CLASSES)
    )
