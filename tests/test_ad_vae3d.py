"""ad_vae3d: VAE shapes and parameter count, the loss against closed forms, per-sample noise, the trainer's
logged terms, and the bundle's train / inference workflows on a small PET cohort."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from common.losses import VAELoss, gaussian_kl
from common.networks import VAE3d, VAEReconstructor

TINY_SHAPE = (16, 16, 16)


def tiny_vae(**kwargs) -> VAE3d:
    return VAE3d(spatial_shape=TINY_SHAPE, channels=(4, 8, 8), decoder_channels=(8, 8, 4), latent_size=6, **kwargs)


def test_full_size_shapes_and_parameter_count_by_formula():
    torch.manual_seed(0)
    net = VAE3d()
    x = torch.rand(1, 1, 80, 96, 80)
    with torch.no_grad():
        h = net.encoder(x)
        recon, mu, logvar = net(x)
    assert h.shape == (1, 128, 10, 12, 10) and h[0].numel() == 153_600  # DESIGN.md 3.3
    assert recon.shape == x.shape and mu.shape == logvar.shape == (1, 128)
    assert 0 <= recon.min() and recon.max() <= 1  # sigmoid output

    def conv(cin, cout):  # weights + bias of a 3x3x3 (transposed) convolution
        return cin * cout * 27 + cout

    def dense(nin, nout):
        return nin * nout + nout

    bn = 2 * (32 + 64 + 128) + 2 * (128 + 64)  # affine BatchNorm weights and biases
    expected = (conv(1, 32) + conv(32, 64) + conv(64, 128) + 2 * dense(153_600, 128)
                + dense(128, 256 * 1200) + conv(256, 128) + conv(128, 64) + conv(64, 1) + bn)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == expected
    assert 79e6 < n_params < 81e6  # "about 80 M parameters"
    dense_params = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())
    assert 78.5e6 < dense_params < 79.5e6  # "79 M of them in the dense layers"
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert all(m.kernel_size == (3, 3, 3) and m.stride == (2, 2, 2) and m.padding == (1, 1, 1) for m in convs)
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}


def test_wrong_input_shape_and_indivisible_sizes_are_refused():
    with pytest.raises(ValueError, match=r"= \[1, 16, 16, 16\], got \[1, 1, 16, 16, 8\]"):
        tiny_vae()(torch.rand(1, 1, 16, 16, 8))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*3"):
        VAE3d(spatial_shape=(80, 96, 84))


def test_kl_matches_torch_distributions_closed_form():
    torch.manual_seed(1)
    mu, logvar = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    reference = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), reference)
    assert torch.all(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)) == 0)  # posterior = prior


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_reductions_against_numpy(reduction):
    rng = np.random.default_rng(3)
    x, xhat = rng.random((3, 1, 4, 5, 6)), rng.random((3, 1, 4, 5, 6))
    mu, logvar = rng.normal(size=(3, 8)), rng.normal(size=(3, 8)) * 0.5
    sse = ((x - xhat) ** 2).reshape(3, -1).sum(1).mean()
    kl = (0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)).sum(1).mean()  # the paper's eq. 1 form
    if reduction == "mean":
        sse, kl = sse / 120, kl / 120
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    terms = VAELoss(beta=0.3, reduction=reduction).terms((t(xhat), t(mu), t(logvar)), t(x))
    assert terms.reconstruction.item() == pytest.approx(sse, rel=1e-6)
    assert terms.kl.item() == pytest.approx(kl, rel=1e-6)
    assert terms.loss.item() == pytest.approx(sse + 0.3 * kl, rel=1e-6)
    assert VAELoss(beta=0.3, reduction=reduction)((t(xhat), t(mu), t(logvar)), t(x)).item() == pytest.approx(sse + 0.3 * kl)


def test_sum_reduction_does_not_depend_on_the_batch_size():
    torch.manual_seed(2)
    x, xhat, mu, logvar = torch.rand(2, 1, 4, 4, 4), torch.rand(2, 1, 4, 4, 4), torch.randn(2, 5), torch.randn(2, 5)
    loss = VAELoss()
    doubled = loss((xhat.repeat(2, 1, 1, 1, 1), mu.repeat(2, 1), logvar.repeat(2, 1)), x.repeat(2, 1, 1, 1, 1))
    torch.testing.assert_close(doubled, loss((xhat, mu, logvar), x))


def test_noise_is_drawn_per_sample_in_training_and_eval_is_deterministic():
    torch.manual_seed(4)
    net = tiny_vae()
    x = torch.rand(1, 1, *TINY_SHAPE).repeat(2, 1, 1, 1, 1)  # two identical inputs in one batch
    net.train()
    with torch.no_grad():
        recon, mu, logvar = net(x)
    torch.testing.assert_close(mu[0], mu[1])  # same posterior (BatchNorm sees the same values)
    assert not torch.allclose(recon[0], recon[1])  # ... but two different samples (ClinicaDL shares one)
    net.eval()
    with torch.no_grad():
        first, mu_eval, _ = net(x)
        second, _, _ = net(x)
        decoded_mean = net.decode(mu_eval)
    torch.testing.assert_close(first[0], first[1], rtol=0, atol=0)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, decoded_mean)


def test_reconstructor_returns_one_deterministic_tensor_and_shares_weights():
    torch.manual_seed(5)
    vae = tiny_vae().eval()
    wrapper = VAEReconstructor(vae).eval()
    x = torch.rand(3, 1, *TINY_SHAPE)
    with torch.no_grad():
        out = wrapper(x)
        torch.testing.assert_close(out, vae(x)[0])
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert set(wrapper.state_dict()) == {f"vae.{k}" for k in vae.state_dict()}
    assert wrapper.vae is vae
    with pytest.raises(TypeError, match="reconstruct"):
        VAEReconstructor(torch.nn.Linear(2, 2))


def test_trainer_logs_the_loss_terms_and_learns_a_tiny_batch():
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    from common.engines import KL_LOSS, RECON_LOSS, VAETrainer, prepare_reconstruction_batch

    torch.manual_seed(6)
    net = tiny_vae()
    ramp = torch.linspace(0, 1, TINY_SHAPE[0]).view(1, -1, 1, 1).expand(1, *TINY_SHAPE)
    data = [{"image": v * ramp + (1 - v) * (1 - ramp)} for v in (0.0, 0.2, 0.8, 1.0)]  # learnable structure
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    loss = VAELoss(beta=1.0)
    trainer = VAETrainer(device="cpu", max_epochs=30, train_data_loader=loader, network=net,
                         optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=loss,
                         prepare_batch=prepare_reconstruction_batch, decollate=False)
    assert isinstance(trainer, SupervisedTrainer)
    history = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(dict(e.state.output)))
    trainer.run()
    first, last = history[0], history[-1]
    assert first["pred"].shape == (4, 1, *TINY_SHAPE) and not first["pred"].requires_grad
    # the logged terms add up to the optimised loss (beta = 1)
    assert first["loss"].item() == pytest.approx(first[RECON_LOSS].item() + first[KL_LOSS].item(), rel=1e-5)
    assert last[RECON_LOSS].item() < 0.7 * first[RECON_LOSS].item()  # it learns the ramps
    with pytest.raises(TypeError, match="terms"):
        VAETrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=net,
                   optimizer=torch.optim.Adam(net.parameters()), loss_function=torch.nn.MSELoss())
