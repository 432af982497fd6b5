"""Distillation losses and stage freezing (the cores of issue 4's distillation and fine-tuning)."""

import pytest
import torch

from shortvid.models import create_model
from shortvid.train.freeze import freeze_stages, stage_modules, unfreeze_all
from shortvid.train.losses import (
    classification_loss,
    imagenet_distillation_loss,
    logit_distillation_loss,
)


def test_imagenet_distillation_is_the_seeds_normalised_squared_difference():
    student = torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 4.0, 3.0], [2.0, 0.0, 0.0]])
    # row 1: N(s) = (.6, .8, 0), N(t) = (0, .8, .6): sum of squares = .36 + 0 + .36 = .72; row 2: 0
    assert imagenet_distillation_loss(student, teacher).item() == pytest.approx(0.36)
    assert imagenet_distillation_loss(teacher * 5, teacher).item() == pytest.approx(0.0, abs=1e-7)  # scale-free


def test_distillation_sends_no_gradient_to_the_teacher():
    student = torch.randn(2, 10, requires_grad=True)
    teacher = torch.randn(2, 10, requires_grad=True)
    (imagenet_distillation_loss(student, teacher) + logit_distillation_loss(student, teacher)).backward()
    assert student.grad is not None and teacher.grad is None


@pytest.mark.parametrize("kind", ["bce", "ce"])
def test_logit_distillation_is_smallest_when_the_student_matches(kind):
    teacher = torch.randn(4, 6)
    same = logit_distillation_loss(teacher.clone(), teacher, 2.0, kind)
    other = logit_distillation_loss(torch.randn(4, 6), teacher, 2.0, kind)
    assert other > same
    if kind == "ce":
        assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_classification_losses():
    logits = torch.tensor([[10.0, -10.0]])
    assert classification_loss(logits, torch.tensor([[1.0, 0.0]]), "bce") < 1e-3
    assert classification_loss(logits, torch.tensor([[1.0, 0.0]]), "ce") < 1e-3
    assert classification_loss(logits, torch.tensor([[0.0, 1.0]]), "ce") > 10


def test_freezing_the_first_two_stages():
    model = create_model("tsn_tiny", num_classes=4)
    expected = stage_modules(model, 2)
    names = freeze_stages(model, 2)
    assert names == expected
    assert any(n.startswith("backbone.layer2") for n in names)
    assert not any(n.startswith("backbone.layer3") for n in names)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("backbone.conv1") for n in frozen)
    assert any(n.startswith("backbone.layer1") for n in frozen) and any(n.startswith("backbone.layer2") for n in frozen)
    assert not any(n.startswith(("backbone.layer3", "backbone.layer4", "classifier")) for n in frozen)

    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.layer1")}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.randn(2, 3, 3, 64, 64)).sum()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm statistics

    unfreeze_all(model, names)
    assert all(p.requires_grad for p in model.parameters())
