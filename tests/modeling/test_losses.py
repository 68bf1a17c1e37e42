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


def test_project_masks_averages_each_bin_on_large_boxes():
    """A 448 px box on a 112 grid: every bin covers 4x4 pixels, and the projection is their
    mean (the box filter), so a 1-2 px line is neither lost nor doubled by where the single
    sample of a bin would fall. One sample per bin (the old setting) aliases it."""
    import numpy as np
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 460, 460)
    mask[0, 10:458, 100:102] = 1  # a 2 px vertical line
    mask[0, 200:201, 10:458] = 1  # a 1 px horizontal line
    mask[0, 50:300, 250:400] = (torch.rand(250, 150, generator=g) > 0.5).float()
    box = torch.tensor([[10.0, 10.0, 458.0, 458.0]])
    got = project_masks(mask, box, torch.zeros(1, dtype=torch.int64), 112)[0]
    want = mask[0, 10:458, 10:458].numpy().reshape(112, 4, 112, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    one = roi_align(mask[:, None], torch.cat([torch.zeros(1, 1), box], 1), (112, 112), 1.0, 1,
                    aligned=True)[0, 0]
    assert (one - torch.from_numpy(want)).abs().max() > 0.4  # aliased
