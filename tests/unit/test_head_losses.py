"""Known answers for the head's losses, computed by hand (not by the functions under test)."""

import math

import pytest
import torch

from fiftyone_usam.head.losses import (
    bad_masks,
    mil_loss,
    pool_topk,
    topk_count,
    uncertainty_loss,
)

# One image, d = 3 masks, K = 2 classes.
LOGITS = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]]])


@pytest.mark.parametrize(
    "d, a, k", [(100, 8, 13), (100, 10, 10), (3, 2, 2), (3, 100, 1), (1, 0.5, 2), (7, 7, 1)]
)
def test_k_is_the_ceiling_of_d_over_a_and_at_least_one(d, a, k):
    assert topk_count(d, a) == k


def test_pooling_averages_the_k_largest_logits_of_each_class():
    # a = 2 -> k = ceil(3/2) = 2: class 0 takes 3 and 2, class 1 takes 4 and 2.
    assert pool_topk(LOGITS, 2).tolist() == [[2.5, 3.0]]
    # a = 10 -> k = 1: the maxima.
    assert pool_topk(LOGITS, 10).tolist() == [[3.0, 4.0]]


def test_mil_loss_one_hot():
    # s = [2.5, 3.0]; -log softmax(s)[0] = log(1 + e^(3.0 - 2.5))
    expected = math.log(1 + math.exp(0.5))
    assert mil_loss(LOGITS, torch.tensor([[1.0, 0.0]]), 2).item() == pytest.approx(expected)
    expected = math.log(1 + math.exp(-0.5))
    assert mil_loss(LOGITS, torch.tensor([[0.0, 1.0]]), 2).item() == pytest.approx(expected)


def test_mil_loss_multi_hot_target_is_normalised():
    # target [0.5, 0.5]: 0.5 * (log(1 + e^0.5) + log(1 + e^-0.5))
    expected = 0.5 * (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-0.5)))
    assert mil_loss(LOGITS, torch.tensor([[1.0, 1.0]]), 2).item() == pytest.approx(expected)
    # labels scaled by 3 give the same loss (labels / sum(labels))
    assert mil_loss(LOGITS, torch.tensor([[3.0, 3.0]]), 2).item() == pytest.approx(expected)


def test_mil_loss_is_the_mean_over_images():
    second = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # s = [0, 0]: loss log 2
    logits = torch.cat([LOGITS, second])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = (math.log(1 + math.exp(0.5)) + math.log(2)) / 2
    assert mil_loss(logits, labels, 2).item() == pytest.approx(expected)


def test_mil_loss_with_k_equal_to_one_uses_the_maxima():
    # a = 10 -> k = 1: s = [3, 4]; class 0 -> log(1 + e^1)
    expected = math.log(1 + math.e)
    assert mil_loss(LOGITS, torch.tensor([[1.0, 0.0]]), 10).item() == pytest.approx(expected)


def test_mil_loss_refuses_an_image_without_labels_and_bad_shapes():
    with pytest.raises(ValueError, match="at least one positive label"):
        mil_loss(LOGITS, torch.tensor([[0.0, 0.0]]), 2)
    with pytest.raises(ValueError, match=r"expected logits \(B, d, K\)"):
        mil_loss(LOGITS[0], torch.tensor([[1.0, 0.0]]), 2)


# Teacher: mask 0 sure of class 0, mask 1 uniform (H = log 2), mask 2 sure of class 1.
TEACHER = torch.tensor([[[5.0, -5.0], [0.0, 0.0], [-5.0, 5.0]]])


def test_bad_masks_are_uncertain_or_confidently_outside_the_labels():
    # Image labelled class 0: mask 1 is uncertain (log 2 = 0.693 > 0.5), mask 2 is sure of a
    # class the image does not have.
    assert bad_masks(TEACHER, torch.tensor([[1.0, 0.0]]), 0.5).tolist() == [[False, True, True]]
    # Labelled both classes: only the uncertain mask is bad.
    assert bad_masks(TEACHER, torch.tensor([[1.0, 1.0]]), 0.5).tolist() == [[False, True, False]]
    # A threshold above log 2 makes the uniform mask acceptable... but its argmax (class 0, the
    # first of a tie) still has to be labelled.
    assert bad_masks(TEACHER, torch.tensor([[1.0, 1.0]]), 0.7).tolist() == [[False, False, False]]
    assert bad_masks(TEACHER, torch.tensor([[0.0, 1.0]]), 0.7).tolist() == [[True, True, False]]


def test_bad_masks_entropy_is_in_nats():
    # p = (0.9, 0.1): H = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.32508...
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    teacher = torch.tensor([[[math.log(9.0), 0.0]]])
    labels = torch.tensor([[1.0, 0.0]])
    assert bad_masks(teacher, labels, h - 1e-4).tolist() == [[True]]
    assert bad_masks(teacher, labels, h + 1e-4).tolist() == [[False]]


def test_uncertainty_loss_averages_minus_log_softmax_summed_over_classes_on_bad_masks():
    student = torch.tensor([[[7.0, -3.0], [0.0, 0.0], [1.0, 0.0]]])  # mask 0 is not bad
    labels = torch.tensor([[1.0, 0.0]])
    # mask 1: -2 log(1/2) = 2 log 2; mask 2: log(1 + e^-1) + log(1 + e^1)
    mask1 = 2 * math.log(2)
    mask2 = math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))
    loss = uncertainty_loss(student, TEACHER, labels, 0.5)
    assert loss.item() == pytest.approx((mask1 + mask2) / 2)


def test_uncertainty_loss_counts_bad_masks_across_the_batch():
    student = torch.zeros(2, 3, 2)  # uniform everywhere: K log K = 2 log 2 per bad mask
    teacher = torch.cat([TEACHER, torch.tensor([[[5.0, -5.0], [5.0, -5.0], [5.0, -5.0]]])])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # image 2 has no bad mask
    assert uncertainty_loss(student, teacher, labels, 0.5).item() == pytest.approx(2 * math.log(2))


def test_uncertainty_loss_is_zero_without_bad_masks_and_still_differentiable():
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], requires_grad=True)
    teacher = torch.tensor([[[5.0, -5.0], [5.0, -5.0], [-5.0, 5.0]]])
    loss = uncertainty_loss(student, teacher, torch.tensor([[1.0, 1.0]]), 0.5)
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None and not student.grad.any()


def test_uncertainty_loss_sends_no_gradient_to_the_teacher_nor_to_good_masks():
    student = torch.tensor([[[4.0, 0.0], [0.0, 0.0], [2.0, 0.0]]], requires_grad=True)
    teacher = TEACHER.clone().requires_grad_(True)
    uncertainty_loss(student, teacher, torch.tensor([[1.0, 0.0]]), 0.5).backward()
    assert teacher.grad is None
    grad = student.grad[0]
    assert grad[0].abs().sum() == 0  # mask 0 is not bad
    assert grad[1].abs().sum() == 0  # mask 1 is bad but already uniform
    # mask 2 is bad: d/dz_j of -sum_i log softmax_i(z) is K p_j - 1, halved by the mean over
    # the 2 bad masks; p = (e^2, 1) / (e^2 + 1)
    p0 = math.exp(2) / (math.exp(2) + 1)
    assert grad[2].tolist() == pytest.approx([(2 * p0 - 1) / 2, (2 * (1 - p0) - 1) / 2])


def test_uncertainty_loss_is_minimal_at_the_uniform_distribution():
    teacher = torch.zeros(1, 1, 3)  # uniform teacher: every mask bad
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    uniform = uncertainty_loss(torch.zeros(1, 1, 3), teacher, labels, 0.5).item()
    assert uniform == pytest.approx(3 * math.log(3))
    peaked = uncertainty_loss(torch.tensor([[[2.0, 0.0, 0.0]]]), teacher, labels, 0.5).item()
    assert peaked > uniform
