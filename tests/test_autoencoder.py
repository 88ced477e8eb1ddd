"""The autoencoder's loss: per-field errors add up to the training objective exactly."""

import numpy as np
import torch

from trainer.autoencoder import FieldLoss, build_autoencoder, default_layers
from trainer.encoding import Block

BLOCKS = [Block("x", 0, 2, "squared"), Block("c", 2, 5, "categorical"), Block("v", 5, 9, "squared"),
          Block("d", 9, 11, "categorical")]
WEIGHTS = np.array([1, 1, 0, 0, 0, 0.25, 0.25, 0.25, 1, 0, 0], dtype=float)


def test_field_errors_sum_to_scores_and_match_by_hand():
    torch.manual_seed(0)
    output = torch.randn(4, 11)
    target = torch.zeros(4, 11)
    target[:, [0, 5, 6, 7]] = torch.rand(4, 4)
    target[:, 3] = 1  # category 1 of field c
    target[:, 9] = 1  # category 0 of field d
    loss = FieldLoss(BLOCKS, WEIGHTS)
    errors = loss.field_errors(output, target)
    torch.testing.assert_close(errors.sum(dim=1), loss.scores(output, target))
    by_hand_x = ((output[:, :2] - target[:, :2]) ** 2).sum(dim=1)
    by_hand_c = -torch.log_softmax(output[:, 2:5], dim=1)[:, 1]
    by_hand_v = 0.25 * ((output[:, 5:8] - target[:, 5:8]) ** 2).sum(dim=1) + (output[:, 8] - target[:, 8]) ** 2
    torch.testing.assert_close(errors[:, 0], by_hand_x)
    torch.testing.assert_close(errors[:, 1], by_hand_c)
    torch.testing.assert_close(errors[:, 2], by_hand_v)


def test_decoded_categories_are_distributions():
    decoded = FieldLoss(BLOCKS, WEIGHTS).decoded(torch.randn(3, 11))
    torch.testing.assert_close(decoded[:, 2:5].sum(dim=1), torch.ones(3))


def test_architecture():
    assert default_layers(111) == [64, 8, 64]
    net = build_autoencoder(784, [100, 50, 100], "tanh", seed=0)
    sizes = [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)]
    assert sizes == [(784, 100), (100, 50), (50, 100), (100, 784)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net) == 3
    again = build_autoencoder(784, [100, 50, 100], "tanh", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
