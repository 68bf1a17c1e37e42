import torch

from levelset_rcnn.levelset import masks_to_tsdf
from levelset_rcnn.modeling import levelset_targets, tsdf_loss
from levelset_rcnn.modeling.losses import project_masks


def test_targets_follow_the_boxes():
    gt = torch.zeros(1, 64, 64, dtype=torch.uint8)
    gt[0, 16:48, 16:48] = 1
    # RoI = exactly the square: everything inside; RoI twice as large: the centre half inside.
    boxes = torch.tensor([[16.0, 16, 48, 48], [0.0, 0, 64, 64]])
    masks, tsdf = levelset_targets([gt], [boxes], [torch.zeros(2, dtype=torch.int64)],
                                   size=112, truncation=12)
    assert masks.shape == tsdf.shape == (2, 112, 112)
    assert masks[0].sum() == 112 * 112 - 4  # bilinear corners of the box fall below 0.5
    assert masks[1, 28:84, 28:84].all() and masks[1].sum() == 56 * 56
    assert torch.equal(tsdf > 0, masks.bool())
    assert tsdf.min() >= -1 and tsdf.max() <= 1


def test_project_masks_empty():
    out = project_masks(torch.zeros(0, 8, 8), torch.zeros(0, 4), torch.zeros(0), 112)
    assert out.shape == (0, 112, 112)


def test_tsdf_loss_prefers_the_truth():
    m = torch.zeros(2, 112, 112)
    m[:, 30:80, 20:90] = 1
    t = masks_to_tsdf(m, 12)
    good = tsdf_loss(t, t, m)
    bad = tsdf_loss(-t, t, m)
    assert good < 0.2 < bad
    phi = t.clone().requires_grad_()
    tsdf_loss(phi, torch.zeros_like(t), m).backward()
    assert phi.grad.abs().sum() > 0


def test_tsdf_loss_empty_is_zero_and_differentiable():
    phi = torch.zeros(0, 112, 112, requires_grad=True)
    loss = tsdf_loss(phi, phi.detach(), phi.detach())
    assert loss.item() == 0
    loss.backward()
