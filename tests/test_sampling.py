"""Blind spots and patch sampling on images whose pixel values encode their own position."""

import numpy as np
import pytest
import torch

from impartial.errors import InputError
from impartial.sampling import PatchSampler, blind_spots

# --- blind spots ---------------------------------------------------------------------------------


def unique_batch(batch=2, channels=3, height=32, width=32):
    """Every pixel of every sample and channel holds a different value: its flat index."""
    return torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(batch, channels, height,
                                                                                        width)


def source_offsets(x, corrupted, mask):
    """(dy, dx) from each masked pixel to the pixel whose value it received; asserts it is the same channel."""
    _, _, height, width = x.shape
    plane = height * width
    b, c, y, x_pos = torch.nonzero(mask, as_tuple=True)
    source = corrupted[b, c, y, x_pos].long()
    assert torch.equal(source // plane, b * x.shape[1] + c)  # taken from the same sample and channel
    within = source % plane
    return within // width - y, within % width - x_pos


def test_blind_spots_count_per_channel_and_unmasked_pixels_unchanged():
    x = unique_batch()
    corrupted, mask = blind_spots(x, ratio=0.9, radius=3, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and corrupted.shape == x.shape
    assert (mask.sum(dim=(2, 3)) == round(0.1 * 32 * 32)).all()  # 102 distinct pixels in every channel
    assert torch.equal(corrupted[~mask], x[~mask])


def test_every_blind_spot_takes_a_neighbour_never_itself():
    # ratio 0 masks every pixel, borders included, so mirrored offsets are exercised too.
    x = unique_batch(1, 2, 16, 20)
    corrupted, mask = blind_spots(x, ratio=0.0, radius=5, generator=torch.Generator().manual_seed(1))
    assert mask.all()
    dy, dx = source_offsets(x, corrupted, mask)
    assert not ((dy == 0) & (dx == 0)).any()
    assert (dy.abs() <= 5).all() and (dx.abs() <= 5).all()


def test_interior_offsets_cover_the_window_without_zero():
    # Interior pixels (never mirrored) of a radius-2 window: offsets in [-2, 1]^2 minus (0, 0) = 15 of them.
    x = unique_batch(1, 1, 64, 64)
    corrupted, mask = blind_spots(x, ratio=0.5, radius=2, generator=torch.Generator().manual_seed(2))
    dy, dx = source_offsets(x, corrupted, mask)
    _, _, y, x_pos = torch.nonzero(mask, as_tuple=True)
    interior = (y >= 2) & (y < 62) & (x_pos >= 2) & (x_pos < 62)
    offsets = set(zip(dy[interior].tolist(), dx[interior].tolist(), strict=True))
    assert offsets == {(a, b) for a in range(-2, 2) for b in range(-2, 2)} - {(0, 0)}


def test_blind_spots_are_reproducible_and_differ_per_channel():
    x = unique_batch(1, 2, 16, 16)
    first = blind_spots(x, 0.8, 2, torch.Generator().manual_seed(3))
    second = blind_spots(x, 0.8, 2, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1][0, 0], first[1][0, 1])


def test_blind_spots_reject_patches_smaller_than_the_window():
    with pytest.raises(InputError, match="larger than 10"):
        blind_spots(torch.zeros(1, 1, 10, 32), 0.95, 5)


# --- patch sampling ------------------------------------------------------------------------------

HEIGHT, WIDTH, PATCH = 40, 50, 16
BOX = (slice(0, 16), slice(0, 16))  # the validation box


def position_image(height=HEIGHT, width=WIDTH, offset=0.0):
    """(2, H, W): channel 0 = row + offset, channel 1 = column, so a patch tells where each pixel came from."""
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    return np.stack([rows + offset, cols])


def example_scribbles():
    """(H, W, 2): cell strokes inside and outside the box, a background stroke outside."""
    scribbles = np.zeros((HEIGHT, WIDTH, 2), np.uint8)
    scribbles[5, 3:12, 0] = 1  # inside the box
    scribbles[30, 20:40, 0] = 1
    scribbles[10:30, 45, 1] = 1
    return scribbles


def example_box():
    box = np.zeros((HEIGHT, WIDTH), bool)
    box[BOX] = True
    return box


def sampler(region="train", **options):
    settings = {"patch": PATCH, "region": region, "rng": np.random.default_rng(0), **options}
    return PatchSampler([position_image()], [example_scribbles()], [example_box()], **settings)


def origins(x):
    """Per patch pixel, its (row, col) in the source image: two (n, P, P) int arrays."""
    return x[:, 0].astype(int), x[:, 1].astype(int)


def test_patch_shapes_and_types():
    x, s = sampler().sample(5)
    assert x.shape == (5, 2, PATCH, PATCH) and x.dtype == np.float32
    assert s.shape == (5, 2, PATCH, PATCH) and s.dtype == np.float32


def test_training_scribbles_follow_the_augmented_image_and_skip_the_box():
    x, s = sampler(scribble_fraction=0.5).sample(40)
    rows, cols = origins(x)
    expected = example_scribbles()
    expected[BOX] = 0
    # Scribble maps were flipped / rotated exactly like the image: each pixel's scribble is its source's.
    assert np.array_equal(s, np.moveaxis(expected[rows, cols], -1, 1).astype(np.float32))
    # Augmentation happened: some patches are not in the image's orientation.
    upright = (np.diff(rows, axis=1) == 1).all(axis=(1, 2)) & (np.diff(cols, axis=2) == 1).all(axis=(1, 2))
    assert 0 < upright.sum() < len(x)


def test_training_centres_avoid_the_box():
    x, _ = sampler(scribble_fraction=0.0).sample(60)
    rows, cols = origins(x)
    top, left = rows.min(axis=(1, 2)), cols.min(axis=(1, 2))
    # Where the patch was not pushed back by the image border, its centre is (top + P/2, left + P/2).
    free = (top > 0) & (top < HEIGHT - PATCH) & (left > 0) & (left < WIDTH - PATCH)
    assert free.sum() > 10
    assert not example_box()[top[free] + PATCH // 2, left[free] + PATCH // 2].any()


def test_scribble_centred_training_patches_contain_scribbles():
    _, s = sampler(scribble_fraction=1.0, jitter=0).sample(30)
    assert (s.sum(axis=(1, 2, 3)) > 0).all()


def test_validation_patches_are_upright_inside_the_box_with_only_its_scribbles():
    validation = sampler("val", scribble_fraction=1.0)
    assert validation.has_validation
    x, s = validation.sample(8)
    rows, cols = origins(x)
    assert (np.diff(rows, axis=1) == 1).all() and (np.diff(cols, axis=2) == 1).all()  # no augmentation
    expected = np.zeros_like(example_scribbles())
    expected[BOX] = example_scribbles()[BOX]
    assert np.array_equal(s, np.moveaxis(expected[rows, cols], -1, 1).astype(np.float32))
    assert (s[:, 0].sum(axis=(1, 2)) > 0).all()


def test_has_validation_needs_scribbles_in_a_box():
    empty_box = np.zeros((HEIGHT, WIDTH), bool)
    empty_box[35:, 0:5] = True  # no scribbles there
    assert not PatchSampler([position_image()], [example_scribbles()], [None], PATCH).has_validation
    assert not PatchSampler([position_image()], [example_scribbles()], [empty_box], PATCH).has_validation


def test_small_images_are_padded():
    image = position_image(10, 12)
    scribbles = np.zeros((10, 12, 2), np.uint8)
    scribbles[2:4, 3, 0] = 1
    x, s = PatchSampler([image], [scribbles], [None], PATCH, rng=np.random.default_rng(0)).sample(4)
    assert x.shape == (4, 2, PATCH, PATCH)
    assert x[:, 0].min() == 0 and x[:, 0].max() == 9  # reflected copies of the image, nothing else
    assert (s.sum(axis=(1, 2, 3)) == 2).all()  # the whole image fits in each patch; padding has no scribbles


def test_images_are_chosen_in_proportion_to_their_area():
    # Uniform centres over a 40 x 50 and a 20 x 25 image: expect 4 : 1.
    small = position_image(20, 25, offset=1000.0)
    images = [position_image(), small]
    scribbles = [np.zeros((40, 50, 2), np.uint8), np.zeros((20, 25, 2), np.uint8)]
    x, _ = PatchSampler(images, scribbles, [None, None], PATCH, rng=np.random.default_rng(4)).sample(500)
    from_small = (x[:, 0, 0, 0] >= 1000).sum()
    assert 70 < from_small < 130  # expected 100


def test_sampling_is_reproducible():
    first = sampler(rng=np.random.default_rng(7)).sample(6)
    second = sampler(rng=np.random.default_rng(7)).sample(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_a_box_over_everything_leaves_nothing_to_train_on():
    with pytest.raises(InputError, match="no pixels"):
        PatchSampler([position_image()], [example_scribbles()], [np.ones((HEIGHT, WIDTH), bool)], PATCH)


def test_intensity_jitter_scales_each_channel_of_a_training_patch_by_one_factor():
    image = np.ones((2, HEIGHT, WIDTH), np.float32)
    sampler = PatchSampler([image], [example_scribbles()], [None], PATCH, intensity=0.5, rng=np.random.default_rng(0))
    x, _ = sampler.sample(8)
    factors = x[:, :, 0, 0]
    assert np.allclose(x, factors[:, :, None, None])  # one factor per patch and channel
    assert (factors >= np.exp(-0.5) - 1e-6).all() and (factors <= np.exp(0.5) + 1e-6).all()
    assert len(np.unique(factors.round(6))) > 8  # they differ between patches and channels
