"""Each loss term against values worked out by hand on tiny tensors."""

import math

import pytest
import torch

from impartial.config import preset_config
from impartial.losses import (
    class_probabilities,
    gap_loss,
    reconstruction_loss,
    scribble_loss,
    smoothness_loss,
    split_outputs,
    total_loss,
)

LN2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # 0.918939


def image(rows):
    """A (1, 1, H, W) float tensor from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


# --- layout -------------------------------------------------------------------------------------

def test_split_outputs_vectra_layout():
    # vectra: task 0 has K = 2 + 2 = 4 components, R = [0] -> 4 logits + 4 means = channels 0..7;
    # task 1 has K = 1 + 1 + 2 = 4, R = [1] -> channels 8..15.
    config = preset_config("quick", "vectra")
    output = torch.arange(16.0)[None, :, None, None].expand(2, 16, 3, 5)
    first, second = split_outputs(output, config.tasks)
    assert first.logits.shape == (2, 4, 3, 5) and first.means.shape == (2, 1, 4, 3, 5)
    assert first.logits[0, :, 0, 0].tolist() == [0, 1, 2, 3]
    assert first.means[0, 0, :, 0, 0].tolist() == [4, 5, 6, 7]
    assert second.logits[0, :, 0, 0].tolist() == [8, 9, 10, 11]
    assert second.means[0, 0, :, 0, 0].tolist() == [12, 13, 14, 15]


def test_split_outputs_orders_means_by_channel_then_component():
    # whole cell: K = 4, R = [0, 1]: logits 0..3, channel 0 means 4..7, channel 1 means 8..11.
    config = preset_config("quick", "whole_cell")
    output = torch.arange(12.0)[None, :, None, None]
    (task,) = split_outputs(output, config.tasks)
    assert task.means.shape == (1, 2, 4, 1, 1)
    assert task.means[0, 1, :, 0, 0].tolist() == [8, 9, 10, 11]


def test_split_outputs_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="need 12"):
        split_outputs(torch.zeros(1, 11, 2, 2), preset_config("quick").tasks)


def test_class_probabilities_sums_components_background_last():
    # ncomponents [1, 1, 2]: class 0 = component 0, class 1 = component 1, background = components 2 + 3.
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])[None, :, None, None]
    summed = class_probabilities(probs, [1, 1, 2])
    assert summed.shape == (1, 3, 1, 1)
    assert summed[0, :, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.7])


# --- scribble loss ------------------------------------------------------------------------------

def test_scribble_loss_by_hand():
    # P_cell = [[0.5, 0.25], [0.0, 0.1]], P_bg = 1 - P_cell = [[0.5, 0.75], [1.0, 0.9]].
    cell = image([[0.5, 0.25], [0.0, 0.1]])
    probs = torch.cat([cell, 1 - cell], dim=1)
    # Cell scribbles on (0,0), (0,1) and (1,0) where P_cell = 0 (clamped to 1e-20):
    #   fore = (ln 2 + ln 4 + (-ln 1e-20)) / 3 = (3 ln 2 + 46.0517) / 3.
    # Background scribble on (1,1) only: back = -ln 0.9.
    scribbles = torch.cat([image([[1, 1], [1, 0]]), image([[0, 0], [0, 1]])], dim=1)
    fore, back = scribble_loss(probs, scribbles)
    assert float(fore) == pytest.approx((3 * LN2 - math.log(1e-20)) / 3, rel=1e-5)
    assert float(back) == pytest.approx(-math.log(0.9), rel=1e-5)


def test_scribble_loss_averages_over_samples_that_have_the_class_and_over_classes():
    # Two foreground classes + background, 1 x 2 pixels, two samples.
    # Sample 0: P = (0.5, 0.25, 0.25) everywhere; class 0 scribbled on both pixels -> l = ln 2.
    # Sample 1: P = (0.25, 0.25, 0.5); class 0 and class 1 unscribbled, background on one pixel -> l = ln 2.
    # Class 0 is present in 1 sample only: L_0 = ln 2 / 1 (not / 2). Class 1 nowhere: L_1 = 0.
    # fore = (L_0 + L_1) / 2 = ln 2 / 2; back: only sample 1 -> ln 2.
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]])[:, :, None, None].expand(2, 3, 1, 2)
    scribbles = torch.zeros(2, 3, 1, 2)
    scribbles[0, 0] = 1
    scribbles[1, 2, 0, 1] = 1
    fore, back = scribble_loss(probs, scribbles)
    assert float(fore) == pytest.approx(LN2 / 2)
    assert float(back) == pytest.approx(LN2)


def test_scribble_loss_without_scribbles_is_zero_with_zero_gradient():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    fore, back = scribble_loss(torch.softmax(logits, dim=1), torch.zeros(2, 2, 4, 4))
    (fore + back).backward()
    assert fore.item() == 0 and back.item() == 0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- reconstruction loss ------------------------------------------------------------------------

# Two components on a 1 x 2 patch: pi_0 = [0.75, 0.25], pi_1 = [0.25, 0.75] (each sums to 1 over the patch).
# Mean maps m_0 = [2, 6], m_1 = [4, 0] give patch means
#   mu_0 = (2 * 0.75 + 6 * 0.25) / 1 = 3,  mu_1 = (4 * 0.25 + 0 * 0.75) / 1 = 1,
# so xhat = [0.75 * 3 + 0.25 * 1, 0.25 * 3 + 0.75 * 1] = [2.5, 1.5].
PI = torch.tensor([[0.75, 0.25], [0.25, 0.75]])[None, :, None, :]  # (1, K=2, 1, 2)
MEANS = torch.tensor([[2.0, 6.0], [4.0, 0.0]])[None, None, :, None, :]  # (1, R=1, K=2, 1, 2)


def test_gaussian_reconstruction_by_hand():
    # x = [3.5, 1.5], only pixel 0 masked: 0.5 * (3.5 - 2.5)^2 + log sqrt(2 pi) = 0.5 + 0.918939.
    target = torch.tensor([3.5, 1.5])[None, None, None]
    mask = torch.tensor([True, False])[None, None, None]
    loss = reconstruction_loss(PI, MEANS, target, mask, "gaussian")
    assert float(loss) == pytest.approx(0.5 + HALF_LOG_2PI, rel=1e-6)


def test_reconstruction_normalises_per_channel_then_weights_channels_equally():
    # Channel 0 as above (1 masked pixel): 0.5 + c. Channel 1 has the same means, x = [3.5, 3.5], both pixels
    # masked: (0.5 * 1^2 + 0.5 * 2^2) / 2 + c = 1.25 + c. Loss = (0.5 + 1.25) / 2 + c = 0.875 + c.
    means = MEANS.expand(1, 2, 2, 1, 2)
    target = torch.tensor([[3.5, 1.5], [3.5, 3.5]])[None, :, None]
    mask = torch.tensor([[True, False], [True, True]])[None, :, None]
    loss = reconstruction_loss(PI, means, target, mask, "gaussian")
    assert float(loss) == pytest.approx(0.875 + HALF_LOG_2PI, rel=1e-6)


def test_unmasked_pixels_never_count():
    mask = torch.tensor([True, False])[None, None, None]
    near = reconstruction_loss(PI, MEANS, torch.tensor([3.5, 1.5])[None, None, None], mask)
    far = reconstruction_loss(PI, MEANS, torch.tensor([3.5, 1e6])[None, None, None], mask)
    assert float(near) == float(far)


def test_mixture_reconstruction_by_hand():
    # Pixel 0, x = 3.5: -log(0.75 N(3.5; 3, 1) + 0.25 N(3.5; 1, 1))
    #   = -log(0.75 e^-0.125 + 0.25 e^-3.125) + log sqrt(2 pi) = -log(0.661873 + 0.010984) + c = 0.396223 + c,
    # lower than the Gaussian-at-xhat value 0.5 + c.
    target = torch.tensor([3.5, 1.5])[None, None, None]
    mask = torch.tensor([True, False])[None, None, None]
    mixture = reconstruction_loss(PI, MEANS, target, mask, "mixture")
    expected = -math.log(0.75 * math.exp(-0.125) + 0.25 * math.exp(-3.125)) + HALF_LOG_2PI
    assert float(mixture) == pytest.approx(expected, rel=1e-6)
    assert float(mixture) == pytest.approx(0.396223 + HALF_LOG_2PI, abs=1e-5)


def test_mixture_and_gaussian_agree_with_one_component():
    pi = torch.ones(1, 1, 2, 2)
    means = torch.randn(1, 1, 1, 2, 2)
    target, mask = torch.randn(1, 1, 2, 2), torch.ones(1, 1, 2, 2, dtype=torch.bool)
    assert float(reconstruction_loss(pi, means, target, mask, "mixture")) == pytest.approx(
        float(reconstruction_loss(pi, means, target, mask, "gaussian")), rel=1e-5)


def test_reconstruction_rejects_unknown_kind():
    with pytest.raises(ValueError, match="laplace"):
        reconstruction_loss(PI, MEANS, torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2, dtype=torch.bool), "laplace")


# --- smoothness -------------------------------------------------------------------------------

def test_smoothness_by_hand():
    # pi = [[0, 0.2], [0.6, 0.6]]: vertical steps 0.6, 0.4 (mean 0.5); horizontal 0.2, 0 (mean 0.1);
    # loss = 0.5 * (0.5 + 0.1) = 0.3.
    assert float(smoothness_loss(image([[0.0, 0.2], [0.6, 0.6]]))) == pytest.approx(0.3)


# --- total ------------------------------------------------------------------------------------

def method_config(tasks):
    """The quick preset (without the separation output): the method's own terms only."""
    config = preset_config("quick", tasks)
    assert not config.separation
    return config


def uniform_output(config, height=2, width=2):
    """Zero output: every pi_k = 1 / K, every mean map 0 (so xhat = 0 and reg = 0)."""
    return torch.zeros(1, config.n_outputs, height, width, requires_grad=True)


def test_total_loss_whole_cell_by_hand():
    # K = 4 uniform: P_cell = P_bg = 0.5, so fore = back = ln 2. Means 0, x = 1 at every blind spot:
    # rec = 0.5 * 1 + c for both channels. reg = 0. total = 0.45 ln 2 + 0.45 ln 2 + 0.1 (0.5 + c).
    config = method_config("whole_cell")
    scribbles = torch.zeros(1, 2, 2, 2)
    scribbles[0, 0, 0, 0] = scribbles[0, 1, 1, 1] = 1
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, :, 0, 1] = True
    total, parts = total_loss(uniform_output(config), torch.ones(1, 2, 2, 2), mask, scribbles, config)
    assert set(parts) == {"fore", "back", "rec", "reg", "sep", "gap", "scribble", "total"}
    assert float(parts["sep"]) == 0 and float(parts["gap"]) == 0
    assert float(parts["fore"]) == pytest.approx(LN2) and float(parts["back"]) == pytest.approx(LN2)
    assert float(parts["rec"]) == pytest.approx(0.5 + HALF_LOG_2PI)
    assert float(parts["reg"]) == 0
    assert float(parts["scribble"]) == pytest.approx(0.9 * LN2)
    assert total.item() == pytest.approx(0.9 * LN2 + 0.1 * (0.5 + HALF_LOG_2PI))
    assert float(parts["total"]) == total.item()


def test_gap_loss_by_hand():
    # Whole cell, components [2, 2]. Pixel 0: all logits 0, P_bg = 1/2. Pixel 1: background logits ln 3,
    # P_bg = (3 + 3) / (1 + 1 + 3 + 3) = 3/4. Only gap pixels count, averaged over them.
    config = method_config("whole_cell")
    output = torch.zeros(1, config.n_outputs, 1, 2)
    output[0, 2:4, 0, 1] = math.log(3.0)
    task_output = split_outputs(output, config.tasks)[0]
    background = class_probabilities(torch.softmax(task_output.logits, dim=1), config.tasks[0].ncomponents)[:, -1]
    both, first, none = torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[1.0, 0.0]]]), torch.zeros(1, 1, 2)
    assert float(gap_loss(background, both)) == pytest.approx((LN2 + math.log(4 / 3)) / 2)
    assert float(gap_loss(background, first)) == pytest.approx(LN2)
    assert float(gap_loss(background, none)) == 0


def test_total_loss_adds_the_weighted_gap_term_from_the_last_map():
    # As the whole-cell case above (P_bg = 1/2 everywhere), with wgap 0.5 and one gap pixel: + 0.5 ln 2.
    config = method_config("whole_cell")
    config.train.wgap = 0.5
    scribbles = torch.zeros(1, 3, 2, 2)
    scribbles[0, 0, 0, 0] = scribbles[0, 1, 1, 1] = scribbles[0, 2, 1, 1] = 1
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, :, 0, 1] = True
    total, parts = total_loss(uniform_output(config), torch.ones(1, 2, 2, 2), mask, scribbles, config)
    assert float(parts["gap"]) == pytest.approx(LN2)
    assert total.item() == pytest.approx(0.9 * LN2 + 0.1 * (0.5 + HALF_LOG_2PI) + 0.5 * LN2)
    with pytest.raises(ValueError, match="expected 3"):
        total_loss(uniform_output(config), torch.ones(1, 2, 2, 2), mask, scribbles[:, :2], config)


def test_total_loss_slices_tasks_and_averages_over_them():
    # vectra scribble channels: [cytoplasm, bg | nucleus_in, nucleus_out, bg]. Uniform pi:
    # task 0 (ncomponents [2, 2]): P_cyto = P_bg = 1/2; task 1 ([1, 1, 2]): P_in = P_out = 1/4, P_bg = 1/2.
    # Scribbles: cytoplasm, task-0 background and nucleus_out, nothing else.
    #   task 0: fore = ln 2, back = ln 2.  task 1: fore = (0 + ln 4) / 2 = ln 2, back = 0 (no scribbles).
    #   averaged: fore = ln 2, back = ln 2 / 2.
    # Reconstruction: task 0 uses channel 0 (x = 1), task 1 channel 1 (x = 2), means 0:
    #   rec = ((0.5 * 1 + c) + (0.5 * 4 + c)) / 2 = 1.25 + c.
    config = method_config("vectra")
    scribbles = torch.zeros(1, 5, 2, 2)
    scribbles[0, 0, 0, 0] = scribbles[0, 1, 0, 1] = scribbles[0, 3, 1, 1] = 1
    clean = torch.stack([torch.ones(2, 2), torch.full((2, 2), 2.0)])[None]
    mask = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    _, parts = total_loss(uniform_output(config), clean, mask, scribbles, config)
    assert float(parts["fore"]) == pytest.approx(LN2)
    assert float(parts["back"]) == pytest.approx(LN2 / 2)
    assert float(parts["rec"]) == pytest.approx(1.25 + HALF_LOG_2PI)


def test_total_loss_uses_the_configured_reconstruction_kind():
    config = method_config("whole_cell")
    output = torch.randn(1, config.n_outputs, 4, 4, generator=torch.Generator().manual_seed(0))
    args = (torch.randn(1, 2, 4, 4), torch.ones(1, 2, 4, 4, dtype=torch.bool), torch.zeros(1, 2, 4, 4))
    _, gaussian = total_loss(output, *args, config)
    config.train.rec_loss = "mixture"
    _, mixture = total_loss(output, *args, config)
    task = split_outputs(output, config.tasks)[0]
    expected = reconstruction_loss(torch.softmax(task.logits, 1), task.means, args[0], args[1], "mixture")
    assert float(mixture["rec"]) == pytest.approx(float(expected))
    assert float(mixture["rec"]) != pytest.approx(float(gaussian["rec"]))


def test_gradient_flows_and_empty_scribbles_give_no_nan():
    config = method_config("vectra")
    config.train.wreg = 0.1
    output = torch.randn(2, config.n_outputs, 8, 8, requires_grad=True)
    mask = torch.rand(2, 2, 8, 8) < 0.2
    total, parts = total_loss(output, torch.randn(2, 2, 8, 8), mask, torch.zeros(2, 5, 8, 8), config)
    total.backward()
    assert all(torch.isfinite(value) for value in parts.values())
    assert float(parts["fore"]) == 0 and float(parts["back"]) == 0
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
    assert not parts["total"].requires_grad
