"""Browser tests: the FiftyOne App, served for a dataset labelled by the pipeline, in Chromium."""
