"""Operator: download checked, de-duplicated training images of each class from the web."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.sources.engines import ENGINES

from .generate import int_param, show_dataset
from .progress import progress_callback, usam_config
from .validation import classes_input, invalidate, name_error, path_error


class CrawlOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "crawl",
            "crawl training images from the web",
            (
                "Downloads images of each class you name from a search engine or a list of URLs "
                "into a labelled dataset, keeping only valid, new images."
            ),
        )

    def resolve_input(self, ctx):
        params = ctx.params
        inputs = types.Object()
        classes_input(
            inputs,
            params,
            'Comma-separated ("person,dog,potted plant") or an ontology YAML file on the server'
            " (its synonyms are searched too).",
        )
        dataset = inputs.str("dataset", required=True, default="usam-crawled", label="Dataset")
        invalidate(dataset, name_error(params.get("dataset"), "dataset"))
        inputs.int("per_class", default=45, min=0, label="Images per class")
        inputs.enum("engine", list(ENGINES), default="bing", label="Engine")
        engine = params.get("engine", "bing")
        if engine == "urls":
            urls_file = inputs.str(
                "urls_file",
                required=True,
                label="URLs file",
                description="On the server: one `class<TAB>url` per line.",
            )
            invalidate(urls_file, path_error(params.get("urls_file"), "URLs file"))
        if engine == "flickr":
            inputs.str(
                "flickr_api_key",
                label="Flickr API key",
                description="Default: $FLICKR_APIKEY on the server.",
            )
        inputs.str("images_dir", label="Images directory (optional)")
        inputs.int("min_size", default=128, min=1, label="Minimum size (shorter side, px)")
        inputs.int("max_bytes", default=20_000_000, min=1, label="Maximum file size (bytes)")
        inputs.int(
            "near_duplicate_distance",
            default=6,
            min=-1,
            max=64,
            label="Near-duplicate distance (bits; -1: off)",
        )
        inputs.float("delay", default=1.0, min=0, label="Seconds between requests to a host")
        return types.Property(inputs, view=types.View(label="U-SAM: crawl training images"))

    def execute(self, ctx):
        from fiftyone_usam.stages.crawl import crawl

        params = ctx.params
        report = crawl(
            params["classes"],
            dataset=params["dataset"],
            per_class=int_param(params, "per_class", 45),
            engine=params.get("engine") or "bing",
            urls_file=params.get("urls_file") or None,
            images_dir=params.get("images_dir") or None,
            min_size=int_param(params, "min_size", 128),
            max_bytes=int_param(params, "max_bytes", 20_000_000),
            near_duplicate_distance=int_param(params, "near_duplicate_distance", 6),
            delay=float(params.get("delay", 1.0)),
            flickr_api_key=params.get("flickr_api_key") or None,
            progress=progress_callback(ctx, "images"),
        )
        show_dataset(ctx, report.dataset)
        return {
            "summary": report.summary(),
            "dataset": report.dataset,
            "requested": report.requested,
            "downloaded": report.downloaded,
            "kept": report.kept,
            "rejected": dict(report.rejected),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        outputs.str("dataset", label="Dataset")
        return types.Property(outputs)
