"""Unit tests of course_utils.augment: batched random flips and resized crops."""
import pytest
import torch

from course_utils import augment

CIFAR_ARGS = dict(scale=(0.8, 1.0), ratio=(0.9, 1.1))


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 5, 64])
def test_shape_and_dtype_are_kept(n):
    x = images(n)
    out = augment.flip_and_crop(0, **CIFAR_ARGS)(x)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_size_sets_the_output_resolution():
    out = augment.random_flip_resized_crop(images(3), size=(16, 24), **CIFAR_ARGS)
    assert out.shape == (3, 3, 16, 24)


def test_values_stay_within_each_images_range():
    # Bilinear resampling averages neighbouring pixels, so nothing leaves [min, max].
    x = images(32) * 4 - 2
    out = augment.random_flip_resized_crop(x, scale=(0.3, 1.0), ratio=(0.5, 2.0),
                                           generator=torch.Generator().manual_seed(1))
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()


def test_whole_image_box_is_the_identity_and_flip_mirrors():
    x = images(4)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1)
    flip = torch.tensor([True, False, True, False])
    out = augment.resized_crop(x, whole, flip)
    torch.testing.assert_close(out[flip], x[flip].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[~flip], x[~flip], atol=1e-5, rtol=0)


def test_flip_probability_one_and_zero():
    x = images(8)
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    always = augment.random_flip_resized_crop(x, flip_p=1.0, **full)
    never = augment.random_flip_resized_crop(x, flip_p=0.0, **full)
    torch.testing.assert_close(always, x.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(never, x, atol=1e-5, rtol=0)


def test_about_half_of_the_images_are_flipped():
    x = images(400)
    out = augment.random_flip_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                           generator=torch.Generator().manual_seed(3))
    flipped = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    kept = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((flipped ^ kept).all()), "every image is either mirrored or unchanged"
    assert 150 <= int(flipped.sum()) <= 250


def test_a_known_box_crops_the_right_pixels():
    # A box covering the top-left 16 x 16 quarter, resized to 16 x 16, is that quarter exactly.
    x = images(2)
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    out = augment.resized_crop(x, box, size=16)
    torch.testing.assert_close(out[0], x[0, :, :16, :16], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1, :, 16:, 16:], atol=1e-5, rtol=0)


def test_same_seed_same_batches_other_seed_other_batches():
    x = images(16)
    a, b, c = (augment.flip_and_crop(s, **CIFAR_ARGS) for s in (7, 7, 8))
    first_a, first_b = a(x), b(x)
    torch.testing.assert_close(first_a, first_b, atol=0, rtol=0)
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)  # the streams stay in step
    assert not torch.equal(first_a, c(x))
    assert not torch.equal(first_a, a(x)), "each call draws new crops"


def test_seeded_augmentation_ignores_the_global_random_state():
    x = images(8)
    torch.manual_seed(0)
    first = augment.flip_and_crop(3, **CIFAR_ARGS)(x)
    torch.manual_seed(123)
    torch.rand(10)
    again = augment.flip_and_crop(3, **CIFAR_ARGS)(x)
    torch.testing.assert_close(first, again, atol=0, rtol=0)


@pytest.mark.parametrize("scale,ratio", [((0.8, 1.0), (0.9, 1.1)), ((0.08, 1.0), (3 / 4, 4 / 3)),
                                         ((0.5, 0.5), (2.0, 2.0))])
def test_crop_boxes_stay_inside_the_image_and_the_scale_range(scale, ratio):
    boxes = augment.crop_boxes(5000, 32, 32, scale=scale, ratio=ratio,
                               generator=torch.Generator().manual_seed(0))
    left, top, w, h = boxes.unbind(dim=1)
    area = w * h
    eps = 1e-6
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + w <= 1 + eps).all() and (top + h <= 1 + eps).all()
    assert (area >= scale[0] - eps).all() and (area <= scale[1] + eps).all()
    fits = (w <= 1) & (h <= 1)
    aspect = w / h  # square image: fractions and pixels have the same aspect
    whole = (w == 1) & (h == 1)  # the fallback when no try fits
    inside = (aspect >= ratio[0] - 1e-5) & (aspect <= ratio[1] + 1e-5)
    assert fits.all() and (inside | whole).all()


def test_crop_boxes_use_the_whole_scale_range():
    boxes = augment.crop_boxes(5000, 32, 32, **CIFAR_ARGS, generator=torch.Generator().manual_seed(0))
    area = boxes[:, 2] * boxes[:, 3]
    assert area.min() < 0.81 and area.max() > 0.97


def test_crops_of_a_non_square_image_keep_the_aspect_ratio_in_pixels():
    boxes = augment.crop_boxes(2000, 20, 40, scale=(0.2, 0.6), ratio=(0.9, 1.1),
                               generator=torch.Generator().manual_seed(0))
    aspect_px = (boxes[:, 2] * 40) / (boxes[:, 3] * 20)
    assert (aspect_px >= 0.9 - 1e-5).all() and (aspect_px <= 1.1 + 1e-5).all()


def test_works_on_the_tensors_device_and_matches_the_cpu():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = images(4).to(device)
        out = augment.flip_and_crop(0, **CIFAR_ARGS)(x)
        assert out.device == x.device
        cpu = augment.flip_and_crop(0, **CIFAR_ARGS)(x.cpu())
        torch.testing.assert_close(out.cpu(), cpu, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad,message", [
    (torch.rand(3, 32, 32), "(N, C, H, W)"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floating-point"),
])
def test_bad_images_get_a_clear_error(bad, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        augment.flip_and_crop(0)(bad)


@pytest.mark.parametrize("kwargs", [dict(scale=(0.0, 1.0)), dict(scale=(0.9, 0.8)), dict(scale=(0.5, 1.5)),
                                    dict(ratio=(1.2, 1.0)), dict(flip_p=1.5)])
def test_bad_settings_get_a_clear_error(kwargs):
    with pytest.raises(ValueError, match="must be"):
        augment.random_flip_resized_crop(images(2), **kwargs)
