"""From mask embeddings to labelled masks: the predictor and its pure post-processing."""
