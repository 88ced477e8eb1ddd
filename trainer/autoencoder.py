"""The MLP autoencoder and the reconstruction error, the anomaly score's first component.

The score of a record is the sum of its fields' errors: weighted squared error over a field's
numeric columns, cross-entropy over a categorical field's slots (the decoder outputs logits, so
it reconstructs a distribution over categories).  Training minimises the mean of that same
score, so the per-field contributions add up to the score exactly.

>>> import numpy as np
>>> from trainer.encoding import Block
>>> blocks = [Block("x", 0, 2, "squared"), Block("c", 2, 5, "categorical")]
>>> loss = FieldLoss(blocks, column_weights=np.array([1.0, 1.0, 0, 0, 0]))
>>> net = build_autoencoder(5, [4, 2, 4], "tanh", seed=0)
>>> X = torch.tensor([[0.1, 0.0, 0.0, 1.0, 0.0]])
>>> errors = loss.field_errors(net(X), X)
>>> errors.shape
torch.Size([1, 2])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainer.encoding import Block

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "gelu": nn.GELU}


def default_layers(width: int) -> list[int]:
    """Hidden sizes from the input width: e.g. 111 inputs → 64-8-64.

    A narrow bottleneck keeps the model from learning the identity, which would reconstruct
    anomalies as well as normal records.
    """
    outer = int(min(256, max(16, 2 ** round(np.log2(max(width, 2) / 2)))))
    return [outer, max(4, outer // 8), outer]


def build_autoencoder(width: int, layers: list[int], activation: str, seed: int) -> nn.Sequential:
    """An MLP width → layers... → width with Glorot-initialised weights and a linear output."""
    torch.manual_seed(seed)
    sizes = [width, *layers, width]
    modules: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        modules.append(linear)
        if i < len(sizes) - 2:
            modules.append(ACTIVATIONS[activation]())
    return nn.Sequential(*modules)


def bottleneck(model: nn.Sequential) -> nn.Sequential:
    """The encoder half of `model`: input → the narrowest hidden layer's activations (the codes).

    >>> net = build_autoencoder(6, [8, 2, 8], "tanh", seed=0)
    >>> bottleneck(net)(torch.zeros(3, 6)).shape
    torch.Size([3, 2])
    """
    linears = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    widths = [model[i].out_features for i in linears[:-1]]
    narrowest = linears[int(np.argmin(widths))]
    return model[: narrowest + 2]  # the linear layer and its activation


class FieldLoss:
    """Per-field reconstruction errors of a batch: the decomposition of the anomaly score."""

    def __init__(self, blocks: list[Block], column_weights: np.ndarray):
        self.blocks = blocks
        width = blocks[-1].stop if blocks else 0
        squared = np.array([b.loss == "squared" for b in blocks])
        # Column → field membership scaled by the column weight: one matmul sums squared errors.
        membership = np.zeros((width, len(blocks)), dtype=np.float32)
        for j, b in enumerate(blocks):
            if squared[j]:
                membership[b.start : b.stop, j] = column_weights[b.start : b.stop]
        self.membership = torch.from_numpy(membership)
        self.weights = torch.from_numpy(membership.sum(axis=1))
        self.categorical = [(b.start, b.stop) for b in blocks if b.loss == "categorical"]
        # Categorical error k → its field's column, so both parts land in one (n, fields) matrix.
        self.categorical_membership = torch.from_numpy(np.eye(len(blocks), dtype=np.float32)[~squared])
        # All categorical blocks at once: slot columns gathered into (fields, widest) rows, short
        # rows padded with column `width` (an appended -inf, which adds nothing to a softmax).
        widest = max((stop - start for start, stop in self.categorical), default=0)
        slots = np.full((len(self.categorical), widest), width)
        one_hot = np.zeros((width, len(self.categorical)), dtype=np.float32)  # column → categorical field
        for k, (start, stop) in enumerate(self.categorical):
            slots[k, : stop - start] = np.arange(start, stop)
            one_hot[start:stop, k] = 1.0
        self.slots = torch.from_numpy(slots)
        self.slot_membership = torch.from_numpy(one_hot)

    def _cross_entropy(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(n, categorical fields) cross-entropy of each one-hot target under the softmax output.

        -Σ t·log_softmax(o) = logsumexp(o)·Σt - Σ t·o, for every field in one pass.
        """
        if not self.categorical:
            return output.new_zeros((len(output), 0))
        padded = torch.cat([output, output.new_full((len(output), 1), -torch.inf)], dim=1)
        log_normalizer = torch.logsumexp(padded[:, self.slots], dim=2)
        return log_normalizer * (target @ self.slot_membership) - (output * target) @ self.slot_membership

    def field_errors(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(n, fields) errors; row sums are the anomaly scores."""
        squared = ((output - target) ** 2) @ self.membership
        return squared + self._cross_entropy(output, target) @ self.categorical_membership

    def scores(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(n,) anomaly scores, without the per-field split (the training objective)."""
        squared = ((output - target) ** 2 * self.weights).sum(dim=1)
        return squared + self._cross_entropy(output, target).sum(dim=1)

    def decoded(self, output: torch.Tensor) -> torch.Tensor:
        """The reconstruction on the input's scale: probabilities for categorical slots."""
        decoded = output.clone()
        for start, stop in self.categorical:
            decoded[:, start:stop] = torch.softmax(output[:, start:stop], dim=1)
        return decoded
