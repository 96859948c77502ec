"""`HeadConfig` and `MaskClassifier`, the MLP that turns a mask embedding into class logits.

The module is stateless in the segment-anything sense: tensors in, tensors out. Batching, numpy,
devices, class names and thresholds live in the driver (`fiftyone_usam.head.classifier.Head`).
This module imports torch; the package's entry points (``fiftyone_usam``, the CLI, the
operators) import it only when a head is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fiftyone_usam.errors import ConfigError


@dataclass(frozen=True)
class HeadConfig:
    """Shape of the head: ``input_dim -> hidden -> hidden -> hidden -> K`` logits (4 layers).

    Attributes:
        hidden_dim: width of the three hidden layers.
        dropout: dropout after each hidden layer while training.
        input_dim: length of a mask embedding (1024 for SAM's 4 x 256 mask tokens).
        standardize: standardise each input feature with the mean and standard deviation of the
            training embeddings (kept in the checkpoint). SAM's mask-token features differ in
            scale by orders of magnitude; without this, a few features dominate early training.
    """

    hidden_dim: int = 256
    dropout: float = 0.1
    input_dim: int = 1024
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ConfigError(f"hidden_dim must be at least 1, got {self.hidden_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_dim < 1:
            raise ConfigError(f"input_dim must be at least 1, got {self.input_dim}")


class MaskClassifier(nn.Module):
    """The 4-layer MLP, with the input standardisation as buffers.

    Args:
        num_outputs: ``K``, the number of logits (the number of classes).
        config: the head's shape.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, num_outputs: int, config: HeadConfig) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ConfigError(f"a head needs at least one output, got {num_outputs}")
        self.num_outputs = num_outputs
        self.config = config
        width = config.hidden_dim
        layers: list[nn.Module] = []
        for size_in in (config.input_dim, width, width):
            layers += [nn.Linear(size_in, width), nn.ReLU(), nn.Dropout(config.dropout)]
        layers.append(nn.Linear(width, num_outputs))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_std", torch.ones(config.input_dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class logits of mask embeddings.

        Args:
            embeddings: `(..., input_dim)` float, one row per mask (e.g. `(B, d, 1024)`).

        Returns:
            `(..., K)` float logits.
        """
        x = embeddings.to(self.input_mean.dtype)
        if self.config.standardize:
            x = (x - self.input_mean) / self.input_std
        return self.mlp(x)

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Sets the per-feature input statistics, `(input_dim,)` each; tiny stds are floored."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp_min(1e-6))
