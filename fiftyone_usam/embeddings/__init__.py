"""SAM mask embeddings: the SAM backend, point grids, the extractor and the EmbeddingStore."""
