"""mAP50 on instance masks: FiftyOne's evaluation (through `evaluate`) equals pycocotools'."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fiftyone_usam.stages.evaluate import evaluate

CLASSES = ["cat", "dog", "bird"]
H, W = 40, 50


def random_mask(rng: np.random.Generator) -> np.ndarray:
    """A full-image boolean ellipse or rectangle, `(H, W)`."""
    mask = np.zeros((H, W), dtype=bool)
    cy, cx = rng.integers(5, H - 5), rng.integers(5, W - 5)
    ry, rx = rng.integers(3, 12), rng.integers(3, 15)
    if rng.random() < 0.5:
        mask[max(cy - ry, 0) : cy + ry, max(cx - rx, 0) : cx + rx] = True
    else:
        yy, xx = np.mgrid[:H, :W]
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = True
    return mask


def jitter(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask shifted by up to 4 px: some shifts keep IoU above 0.5, some do not."""
    dy, dx = rng.integers(-4, 5, size=2)
    return np.roll(mask, (int(dy), int(dx)), axis=(0, 1))


def box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def to_detection(label: str, mask: np.ndarray, score: float | None = None):
    import fiftyone as fo

    x, y, w, h = box(mask)
    return fo.Detection(
        label=label,
        bounding_box=[x / W, y / H, w / W, h / H],
        mask=mask[y : y + h, x : x + w],
        confidence=score,
    )


def coco_annotation(ann_id, image_id, category, mask, score=None):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    out = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": rle,
        "area": float(mask.sum()),
        "bbox": list(box(mask)),
        "iscrowd": 0,
    }
    if score is not None:
        out["score"] = score
    return out


def test_map50_agrees_with_pycocotools(make_dataset, tmp_path):
    import fiftyone as fo
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    paths = []
    for i in range(6):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(path)
        paths.append(path)
    dataset = make_dataset(paths)
    images, gts, dets = [], [], []
    for image_id, sample in enumerate(dataset, start=1):
        images.append({"id": image_id, "width": W, "height": H})
        truth, predicted = [], []
        for _ in range(rng.integers(1, 4)):
            category = int(rng.integers(len(CLASSES)))
            mask = random_mask(rng)
            truth.append(to_detection(CLASSES[category], mask))
            gts.append(coco_annotation(len(gts) + 1, image_id, category + 1, mask))
            if rng.random() < 0.8:  # found, roughly; sometimes under another label
                label = category if rng.random() < 0.85 else int(rng.integers(len(CLASSES)))
                guess, score = jitter(mask, rng), round(float(rng.random()), 4)
                predicted.append(to_detection(CLASSES[label], guess, score))
                dets.append(coco_annotation(len(dets) + 1, image_id, label + 1, guess, score))
        for _ in range(rng.integers(0, 3)):  # false positives
            label, guess, score = int(rng.integers(3)), random_mask(rng), float(rng.random())
            score = round(score, 4)
            predicted.append(to_detection(CLASSES[label], guess, score))
            dets.append(coco_annotation(len(dets) + 1, image_id, label + 1, guess, score))
        sample["truth"] = fo.Detections(detections=truth)
        sample["pred"] = fo.Detections(detections=predicted)
        sample.save()

    report = evaluate(dataset, pred_field="pred", gt_field="truth")

    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": gts,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    coco.createIndex()
    results = coco.loadRes(dets)
    evaluator = COCOeval(coco, results, iouType="segm")
    evaluator.params.iouThrs = np.array([0.5])
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    reference = float(evaluator.stats[0])  # AP at IoU 0.5, all areas, up to 100 detections

    assert 0.05 < reference < 0.95  # a mixed case, neither trivial nor hopeless
    assert report.map50 == pytest.approx(reference, abs=1e-6)
