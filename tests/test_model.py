"""The U-Net's shape, MC-dropout switch and its training in both precisions."""

import pytest
import torch
from torch import nn

from impartial.config import preset_config
from impartial.device import autocast
from impartial.losses import total_loss
from impartial.model import PixelDropout, UNet, build_model, enable_mc_dropout


def test_forward_keeps_the_spatial_size():
    model = UNet(2, 5, depth=2, base=4)
    assert model(torch.rand(3, 2, 16, 24)).shape == (3, 5, 16, 24)


def test_input_must_be_a_multiple_of_two_to_the_depth():
    model = UNet(1, 1, depth=3, base=2)
    assert model.size_multiple == 8
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.rand(1, 1, 12, 16))


def test_parameter_count_by_hand():
    # depth 1, base 2, 1 -> 1 channels. Conv weights + biases:
    #   level 0: 1->2 (18 + 2), 2->2 (36 + 2); level 1: 2->4 (72 + 4), 4->4 (144 + 4);
    #   decoder 0: (4 + 2)->2 (108 + 2), 2->2 (36 + 2); head 1x1 2->1 (2 + 1). Total 433.
    model = UNet(1, 1, depth=1, base=2)
    assert sum(p.numel() for p in model.parameters()) == 433


def test_dropout_after_every_conv_pair():
    model = UNet(1, 1, depth=3, base=2, dropout=0.3)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2 * 3 + 1  # encoder levels 0..3, decoder levels 0..2
    assert all(m.p == 0.3 for m in dropouts)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_build_model_follows_the_config():
    config = preset_config("quick", "vectra")
    model = build_model(config)
    assert model.depth == config.model.depth
    assert model.encoder[0][0].in_channels == 2 and model.encoder[0][0].out_channels == config.model.base
    assert model.head.out_channels == config.n_outputs == 16


def test_mc_dropout_samples_while_eval_is_deterministic():
    torch.manual_seed(0)
    model = UNet(1, 2, depth=1, base=4, dropout=0.5)
    x = torch.rand(1, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    enable_mc_dropout(model)
    assert not model.training
    assert all(m.training == isinstance(m, nn.Dropout) for m in model.modules())
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_few_steps_reduce_the_loss(dtype):
    # Model and losses together: Adam on one fixed batch must lower the total loss, in both precisions.
    torch.manual_seed(0)
    config = preset_config("quick", "whole_cell", **{"model.dropout": 0.0, "separation": True})
    model = UNet(2, config.n_outputs, depth=1, base=4, dropout=0.0)
    x = torch.rand(2, 2, 8, 8)
    scribbles = torch.zeros(2, 5, 8, 8)  # cell, background, then cell core, not core and gap
    scribbles[:, 0, :4] = scribbles[:, 2, :3] = 1
    scribbles[:, 1, 4:] = scribbles[:, 3, 3:] = 1
    mask = torch.rand(2, 2, 8, 8) < 0.3
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        with autocast(torch.device("cpu"), dtype):
            output = model(x)
        assert output.dtype == dtype
        loss, _ = total_loss(output.float(), x, mask, scribbles, config)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_memory_format_is_internal(tmp_path):
    # NHWC (the default) and NCHW compute the same function; callers always get NCHW-contiguous output.
    torch.manual_seed(0)
    model = UNet(2, 3, depth=2, base=4, dropout=0.0).eval()
    x = torch.rand(2, 2, 8, 8)
    nhwc = model(x)
    assert nhwc.is_contiguous()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    reloaded = UNet(2, 3, depth=2, base=4, dropout=0.0).use_memory_format(torch.contiguous_format).eval()
    reloaded.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert torch.allclose(reloaded(x), nhwc, atol=1e-5)


def test_pixel_dropout_rate_scale_and_gradient():
    torch.manual_seed(0)
    dropout = PixelDropout(0.2).train()
    x = torch.ones(32, 12, 64, 64).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = dropout(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 51 / 256) < 0.003  # round(256 * 0.2) = 51 of 256 byte values drop
    assert torch.allclose(y[y != 0], torch.tensor(256 / 205))  # kept values scaled so the mean stays 1
    assert abs(y.mean().item() - 1.0) < 0.01
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # no gradient through dropped elements
    # masks are independent between elements: two neighbours drop together about p**2 of the time
    pairs = dropout(torch.ones(20000, 2, 1, 1))
    assert abs(((pairs[:, 0] == 0) & (pairs[:, 1] == 0)).float().mean().item() - (51 / 256) ** 2) < 0.01


def test_pixel_dropout_is_the_identity_in_eval_mode_and_drops_all_at_one():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(PixelDropout(0.5).eval()(x), x)
    assert torch.equal(PixelDropout(1.0).train()(x), torch.zeros_like(x))
