"""Deletion / insertion curves (RISE) on toy scores whose curves are known exactly."""

import numpy as np
import pytest
import torch

from camlens.evaluate import auc, deletion_curve, gaussian_blur, insertion_curve


def total(batch):
    return batch.sum(dim=(1, 2, 3))


def test_auc_trapezoid():
    assert auc([0, 1], [1, 1]) == 1.0
    assert auc([0, 0.5, 1], [1, 0, 1]) == pytest.approx(0.5)
    assert auc(np.linspace(0, 1, 101), np.linspace(1, 0, 101)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        auc([0], [1])
    with pytest.raises(ValueError):
        auc([0, 1], [1, 2, 3])


def test_deletion_of_every_pixel_one_per_step():
    image = torch.ones(2, 4, 4)
    heatmap = np.arange(16.0).reshape(4, 4)
    xs, ys = deletion_curve(total, image, heatmap, steps=16, baseline=0.0)
    np.testing.assert_allclose(xs, np.arange(17) / 16)
    np.testing.assert_allclose(ys, 2 * (16 - np.arange(17)))  # two channels per pixel
    assert auc(xs, ys / 32) == pytest.approx(0.5)
    xi, yi = insertion_curve(total, image, heatmap, steps=16, baseline=0.0)
    np.testing.assert_allclose(yi, 2 * np.arange(17))


def test_most_salient_pixels_go_first():
    image = torch.rand(3, 6, 6) + 0.5
    heatmap = np.zeros((6, 6))
    heatmap[:2, :2] = 1.0  # the region the score reads is the most salient

    def region(batch):
        return batch[:, :, :2, :2].sum(dim=(1, 2, 3))

    xs, ys = deletion_curve(region, image, heatmap, steps=9, baseline=0.0)  # 4 pixels per step
    assert ys[0] == pytest.approx(float(image[:, :2, :2].sum()))
    assert np.all(ys[1:] == 0)
    xs, yi = insertion_curve(region, image, heatmap, steps=9, baseline=0.0)
    assert yi[0] == 0 and np.allclose(yi[1:], ys[0])
    # the reverse heatmap deletes the region last
    _, late = deletion_curve(region, image, -heatmap, steps=9, baseline=0.0)
    assert np.all(late[:-1] > 0) and late[-1] == 0


def test_ties_go_in_raster_order():
    image = torch.ones(1, 3, 5)

    def first_row(batch):
        return batch[:, 0, 0, :].sum(dim=1)

    _, ys = deletion_curve(first_row, image, np.zeros((3, 5)), steps=15)
    np.testing.assert_allclose(ys[:6], [5, 4, 3, 2, 1, 0])
    assert np.all(ys[6:] == 0)


def test_uneven_steps_and_batches():
    image = torch.ones(1, 5, 7)  # 35 pixels in 4 steps: 0, 8, 17, 26, 35
    heatmap = np.random.default_rng(0).random((5, 7))
    xs, ys = deletion_curve(total, image, heatmap, steps=4, batch_size=100)
    np.testing.assert_allclose(xs * 35, [0, 8, 17, 26, 35])
    np.testing.assert_allclose(ys, 35 - xs * 35)
    calls = []

    def counting(batch):
        calls.append(batch.shape[0])
        return total(batch)

    xs2, ys2 = deletion_curve(counting, image, torch.from_numpy(heatmap), steps=4, batch_size=2)
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(ys2, ys)


def test_baselines():
    image = torch.full((3, 8, 8), 2.0)
    hm = np.random.default_rng(1).random((8, 8))
    _, ys = deletion_curve(
        total, image, hm, steps=2, baseline=torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1)
    )
    np.testing.assert_allclose(ys, [384, 288, 192])
    # the blur of a constant image is the image: insertion is flat
    _, ys = insertion_curve(total, image, hm, steps=4)
    np.testing.assert_allclose(ys, 384, rtol=1e-6)
    with pytest.raises(ValueError):
        deletion_curve(total, image, hm, baseline="noise")
    with pytest.raises(ValueError):
        deletion_curve(total, image, np.zeros((4, 4)))
    with pytest.raises(ValueError):
        deletion_curve(lambda b: b.sum(), image, hm, steps=2)


def test_gaussian_blur_preserves_mass_and_smooths():
    img = torch.zeros(1, 31, 31)
    img[0, 15, 15] = 1.0
    out = gaussian_blur(img, kernel_size=11, sigma=5.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert out[0, 15, 15] < 0.1 and out[0, 15, 20] > 0
    assert torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.transpose(1, 2))
    with pytest.raises(ValueError):
        gaussian_blur(img, kernel_size=4)
