"""The semantic head: an MLP from SAM mask embeddings to class logits, trained with image labels.

``model.py`` (the stateless MLP and its config), ``losses.py`` (MIL top-k pooling and uncertainty
distillation), ``loop.py`` (held-out split, epochs, early stopping), ``train.py`` (the teacher
and student stages on in-memory arrays), ``classifier.py`` (`Head`, the trained head as a
driver: probabilities and labels for raw embeddings), ``checkpoint.py`` (safetensors + JSON),
``training_set.py`` (labels and embeddings of a FiftyOne dataset), ``run.py`` (`train_head`,
the whole stage) and ``planted.py`` (synthetic bags with a known answer, for tests and
benchmarks).
"""
