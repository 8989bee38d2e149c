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
    assert h.shape == (1, 128, 10, 12, 10) and h[0].numel() == 153_600  # docs/design.md 3.3
    assert recon.shape == x.shape and mu.shape == logvar.shape == (1, 128)
    assert recon.min() >= 0 and recon.max() <= 1  # sigmoid output

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
    reference = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)),
                              Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
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
    t = torch.from_numpy
    terms = VAELoss(beta=0.3, reduction=reduction).terms((t(xhat), t(mu), t(logvar)), t(x))
    assert terms.reconstruction.item() == pytest.approx(sse, rel=1e-6)
    assert terms.kl.item() == pytest.approx(kl, rel=1e-6)
    assert terms.loss.item() == pytest.approx(sse + 0.3 * kl, rel=1e-6)
    loss = VAELoss(beta=0.3, reduction=reduction)((t(xhat), t(mu), t(logvar)), t(x))
    assert loss.item() == pytest.approx(sse + 0.3 * kl)


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
        recon, mu, _ = net(x)
    torch.testing.assert_close(mu[0], mu[1])  # same posterior (BatchNorm sees the same values)
    assert not torch.allclose(recon[0], recon[1])  # ... but two different samples (ClinicaDL shares one)
    net.eval()
    with torch.no_grad():
        first, mu_eval, _ = net(x)
        second, _, _ = net(x)
        decoded_mean = net.decode(mu_eval)
    # identical inputs in one batch: equal up to float summation order (oneDNN may block batch elements
    # differently on some CPUs); a drawn noise sample would differ by orders of magnitude more
    torch.testing.assert_close(first[0], first[1], rtol=1e-5, atol=1e-6)
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

    from common.engines import (
        KL_LOSS,
        RECON_LOSS,
        VAETrainer,
        prepare_reconstruction_batch,
    )

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


def test_controls_datalist_refuses_patients():
    from common.data.training import controls_datalist
    from common.errors import InputDataError

    subjects = [{"id": "a", "group": "control", "image": ["a.nii.gz"]},
                {"id": "b", "group": "patient", "image": ["b.nii.gz"]}]
    assert controls_datalist(subjects[:1]) == [{"id": "a", "image": ["a.nii.gz"]}]
    with pytest.raises(InputDataError, match=r"only controls may be used for training, got b \(patient\)"):
        controls_datalist(subjects)


# ----------------------------------------------------------------------------------------------- the bundle


@pytest.fixture(scope="module")
def small_pet(tmp_path_factory):
    """5 controls + 1 AD patient on the real 2 mm grid: split 0 with n_val=1 trains on 2 controls."""
    from common.data.synthetic import PETCohortConfig, make_pet_cohort

    folder, _ = make_pet_cohort(tmp_path_factory.mktemp("pet_small") / "cohort", PETCohortConfig(5, 1, seed=7),
                                progress=False)
    return folder


def _minmax(volume: np.ndarray) -> np.ndarray:
    return (volume - volume.min()) / (volume.max() - volume.min())


def test_one_epoch_training_and_inference_through_configworkflow(small_pet, tmp_path):
    from helpers import bundle_workflow

    from common.data import read_dataset
    from common.engines import KL_LOSS, RECON_LOSS

    dataset = read_dataset(small_pet / "dataset.json")
    overrides = {"dataset_dir": str(small_pet), "bundle_root": str(tmp_path), "n_val": 1, "epochs": 1, "batch_size": 2,
                 "progress": False, "cache_workers": 1}
    train = bundle_workflow("ad_vae3d", "train.json", "train", **overrides)
    train.initialize()
    assert train.check_properties() == []
    ids = [item["id"] for item in train.train_dataset.data]
    val_ids = [item["id"] for item in train.parser.get_parsed_content("validate#dataset").data]
    assert len(ids) == 2 and len(val_ids) == 1 and not set(ids) & set(val_ids)
    assert {dataset.groups[i] for i in ids + val_ids} == {"control"}  # patients never train or validate
    # the cached volumes are min-max normalised per image
    volume = train.train_dataset[0]["image"]
    assert volume.shape == (1, 80, 96, 80) and volume.min() == 0 and volume.max() == 1
    log = train.parser.get_parsed_content("train#log_terms")
    logged = log({"loss": torch.tensor(3.0), RECON_LOSS: torch.tensor(2.0), KL_LOSS: torch.tensor(1.0)})
    assert logged == {"train_loss": 3.0, "train_recon": 2.0, "train_kl": 1.0}
    train.run()
    train.finalize()
    summary = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert summary["epochs"] == 1 and summary["best_val_epoch"] == 1 and summary["key_metric"] == "val_mse"
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True, map_location="cpu")
    reference = VAEReconstructor(VAE3d()).eval()
    reference.load_state_dict(state)  # the checkpoint is the inference network_def's (keys vae.*)
    # validation logged the middle axial (Y x X = 96 x 80) and coronal (80 x 80, padded) slices of its one sample,
    # input | reconstruction | |error|, upscaled x2 so the 80-px side reaches 96 px, 2-px gaps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["val_reconstruction/0"]
    logged = [(e.step, e.height, e.width) for e in events.Images("val_reconstruction/0")]
    assert logged == [(1, 2 * 192 + 2, 3 * 160 + 4)]

    # inference on a control and the patient, and on a pet-linear copy of the control (ClinicaDL striding)
    control, patient = dataset.controls[0], dataset.patients[0]
    source = nib.load(control["image"][0])
    linear_dir = tmp_path / "linear"
    v = source.get_fdata(dtype=np.float32)
    upsampled = np.zeros((169, 208, 179), np.float32)
    upsampled[4:164, 8:200, 8:168] = v.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    (linear_dir / "sub-lin").mkdir(parents=True)
    nib.save(nib.Nifti1Image(upsampled, np.array([[1, 0, 0, -84], [0, 1, 0, -119], [0, 0, 1, -78], [0, 0, 0, 1.0]])),
             linear_dir / "sub-lin" / "pet.nii.gz")
    (linear_dir / "dataset.json").write_text(json.dumps({
        "name": "pet-linear copy", "grid": "clinica_pet_linear", "modality": {"0": "PET"}, "numTraining": 1,
        "training": [{"id": "sub-lin", "group": "control", "image": "sub-lin/pet.nii.gz"}]}))

    out = tmp_path / "eval" / "inference"
    infer = bundle_workflow("ad_vae3d", "inference.json", "infer", dataset_dir=str(small_pet),
                            bundle_root=str(tmp_path), subject_ids=[control["id"], patient["id"]], num_workers=0)
    infer.initialize()
    assert infer.check_properties() == []
    infer.run()
    infer.finalize()
    linear = bundle_workflow("ad_vae3d", "inference.json", "infer", dataset_dir=str(linear_dir),
                             bundle_root=str(tmp_path), pet_input_mode="clinicadl", num_workers=0)
    linear.initialize()
    linear.run()

    for subject in (control, patient):
        sid, src = subject["id"], nib.load(subject["image"][0])
        x = _minmax(src.get_fdata(dtype=np.float32))
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)[None, None]).numpy()[0, 0]
        files = {n: nib.load(out / sid / f"{sid}_{n}.nii.gz")
                 for n in ("reconstruction", "difference", "abs_difference")}
        for img in files.values():
            assert img.shape == (80, 96, 80)
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
        recon = files["reconstruction"].get_fdata()
        np.testing.assert_allclose(recon, expected, atol=1e-5)
        np.testing.assert_allclose(files["difference"].get_fdata(), x - recon, atol=1e-5)  # input minus reconstruction
        np.testing.assert_allclose(files["abs_difference"].get_fdata(), np.abs(x - recon), atol=1e-5)
    recon_linear = nib.load(out / "sub-lin" / "sub-lin_reconstruction.nii.gz")
    np.testing.assert_allclose(recon_linear.affine, source.affine, atol=1e-5)  # reduced onto clinicadl2
    recon_control = nib.load(out / control["id"] / f"{control['id']}_reconstruction.nii.gz")
    np.testing.assert_allclose(recon_linear.get_fdata(), recon_control.get_fdata(), atol=1e-6)


def test_inference_without_weights_fails_before_work(small_pet, tmp_path):
    from helpers import bundle_workflow

    infer = bundle_workflow("ad_vae3d", "inference.json", "infer", dataset_dir=str(small_pet),
                            bundle_root=str(tmp_path))
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors of config expressions
        infer.initialize()
    causes, cause = [], err.value
    while cause is not None:
        causes.append(str(cause))
        cause = cause.__cause__
    assert any("model.pt: file not found" in c for c in causes), causes
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------------ short-schedule training options


def test_warmup_cosine_factor_against_hand_values():
    from common.engines import WarmupCosineFactor

    f = WarmupCosineFactor(warmup_iterations=4, total_iterations=9, final_fraction=0.1)
    # warm-up (i + 1) / 4, then a half cosine over iterations 4..8 from 1 to 0.1: progress (i - 4) / 4
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 0.1 + 0.9 * (1 + np.cos(np.pi / 4)) / 2, 0.55,
                0.1 + 0.9 * (1 + np.cos(3 * np.pi / 4)) / 2, 0.1, 0.1, 0.1]
    np.testing.assert_allclose([f(i) for i in range(11)], expected, rtol=0, atol=1e-12)
    assert [WarmupCosineFactor()(i) for i in (0, 1, 1000)] == [1.0, 1.0, 1.0]  # the paper's constant rate
    assert [WarmupCosineFactor(3)(i) for i in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="must exceed"):
        WarmupCosineFactor(5, 5)
    with pytest.raises(ValueError, match="final_fraction"):
        WarmupCosineFactor(0, 10, 1.5)


def test_kl_warmup_weight_against_hand_values():
    from common.losses.vae import kl_warmup_weight

    assert [kl_warmup_weight(i, 4) for i in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_warmup_weight(0, 0) == kl_warmup_weight(50, 0) == 1.0
    with pytest.raises(ValueError):
        kl_warmup_weight(-1, 4)


def test_output_bias_init_starts_the_output_at_the_mean_intensity():
    from common.networks import mean_intensity

    rng = np.random.default_rng(8)
    data = [{"image": rng.random((1, 4, 5, 6)) ** 3} for _ in range(3)]
    m = mean_intensity(data)
    assert m == pytest.approx(np.mean([d["image"] for d in data]), rel=1e-12)  # numpy reference
    torch.manual_seed(9)
    net = tiny_vae(output_bias_init=m).eval()
    last = net.decoder[-1][0]
    assert last.bias.item() == pytest.approx(np.log(m / (1 - m)), rel=1e-6)
    with torch.no_grad():
        last.weight.zero_()  # the bias alone decides the output: every voxel at the mean
        out = net.reconstruct(torch.rand(2, 1, *TINY_SHAPE))
    torch.testing.assert_close(out, torch.full_like(out, m))
    default = tiny_vae()  # without the option: PyTorch's initialisation, |bias| <= 1/sqrt(fan_in)
    assert abs(default.decoder[-1][0].bias.item()) <= 1 / np.sqrt(4 * 27)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\)"):
            tiny_vae(output_bias_init=bad)


def test_batchnorm_momentum_is_set_on_every_batchnorm_and_changes_no_parameter():
    torch.manual_seed(10)
    default, fast = tiny_vae(), tiny_vae(batchnorm_momentum=0.5)
    bns = [m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 5 and {m.momentum for m in bns} == {0.5}
    assert {m.momentum for m in default.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {0.1}
    assert [p.shape for p in default.parameters()] == [p.shape for p in fast.parameters()]
    # running mean after one training forward: (1 - momentum) * 0 + momentum * batch mean
    x = torch.rand(2, 1, *TINY_SHAPE)
    fast.train()
    with torch.no_grad():
        fast(x)
        first_conv = fast.encoder[0][0](x)
    torch.testing.assert_close(bns[0].running_mean, 0.5 * first_conv.mean(dim=(0, 2, 3, 4)))
    with pytest.raises(ValueError, match="batchnorm_momentum"):
        tiny_vae(batchnorm_momentum=0.0)


def test_latent_head_learning_rate_scale_on_adams_first_step():
    from common.networks import vae_parameter_groups

    torch.manual_seed(11)
    net = tiny_vae()
    groups = vae_parameter_groups(torch.nn.DataParallel(net), 1e-2, 1e-3)  # a wrapper is looked through
    heads = {id(p) for layer in (net.mu, net.logvar) for p in layer.parameters()}
    assert [len(g["params"]) for g in groups] == [len(list(net.parameters())) - 4, 4]
    assert {id(p) for p in groups[1]["params"]} == heads
    assert sorted(map(id, groups[0]["params"] + groups[1]["params"])) == sorted(map(id, net.parameters()))
    assert vae_parameter_groups(net, 1e-2) == [{"params": list(net.parameters()), "lr": 1e-2}]  # plain Adam
    # Adam's first step moves each weight by lr * g / (|g| + eps) ~ lr: 1e-2 in the body, 1e-5 in the heads
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam(groups, eps=1e-12)
    recon, mu, logvar = net.train()(torch.rand(2, 1, *TINY_SHAPE))
    VAELoss()((recon, mu, logvar), torch.rand(2, 1, *TINY_SHAPE)).backward()
    opt.step()
    for name, p in net.named_parameters():
        moved = (p.detach() - before[name]).abs()
        expected = 1e-5 if name.startswith(("mu.", "logvar.")) else 1e-2
        moved = moved[moved > 0]  # weights without gradient (dead ReLU paths) do not move
        torch.testing.assert_close(moved, torch.full_like(moved, expected), rtol=1e-3, atol=0)
    with pytest.raises(TypeError, match="VAE3d"):
        vae_parameter_groups(torch.nn.Linear(2, 2), 1e-3)


def test_kl_warmup_and_lr_schedule_handlers_in_a_trainer():
    from ignite.engine import Events
    from monai.handlers import LrScheduleHandler

    from common.engines import (
        KL_LOSS,
        RECON_LOSS,
        KLWarmupHandler,
        VAETrainer,
        WarmupCosineFactor,
        prepare_reconstruction_batch,
    )

    torch.manual_seed(12)
    net = tiny_vae()
    loader = torch.utils.data.DataLoader([{"image": torch.rand(1, *TINY_SHAPE)} for _ in range(4)], batch_size=2)
    loss = VAELoss(beta=0.5)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    factor = WarmupCosineFactor(2, 6, 0.0)
    trainer = VAETrainer(device="cpu", max_epochs=3, train_data_loader=loader, network=net, optimizer=opt,
                         loss_function=loss, prepare_batch=prepare_reconstruction_batch, decollate=False,
                         train_handlers=[LrScheduleHandler(torch.optim.lr_scheduler.LambdaLR(opt, factor),
                                                            epoch_level=False, print_lr=False),
                                         KLWarmupHandler(loss, warmup_iterations=4)])
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(
        (loss.beta, opt.param_groups[0]["lr"], e.state.output["loss"].item(), e.state.output[RECON_LOSS].item(),
         e.state.output[KL_LOSS].item())))
    lrs = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
    trainer.run()
    assert [s[0] for s in seen] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]  # 0.5 * i / 4, capped
    for beta, _, total, recon, kl in seen:  # the optimised loss used the scheduled beta
        assert total == pytest.approx(recon + beta * kl, rel=1e-5)
    np.testing.assert_allclose(lrs, [1e-3 * factor(i) for i in range(6)], rtol=1e-12)
    assert lrs[0] == pytest.approx(5e-4) and lrs[-1] == pytest.approx(0.0, abs=1e-18)


def test_train_config_defaults_are_the_paper_schedule_and_the_demo_recipe_is_wired(small_pet, tmp_path):
    from helpers import bundle_workflow

    from common.app.experiment import short_schedule_overrides
    from common.networks import mean_intensity

    narrow = {"network_def#channels": [4, 8, 8], "network_def#decoder_channels": [8, 8, 4],
              "network_def#latent_size": 8}
    base = {"dataset_dir": str(small_pet), "bundle_root": str(tmp_path), "n_val": 1, "progress": False,
            "cache_workers": 1, **narrow}
    paper = bundle_workflow("ad_vae3d", "train.json", "train", **base)
    paper.initialize()
    parse = paper.parser.get_parsed_content
    opt, net = parse("optimizer"), parse("network")
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["lr"] == 1e-5 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    factor = parse("lr_scheduler").lr_lambdas[0]
    assert [factor(i) for i in (0, 1, 10**6)] == [1.0, 1.0, 1.0]  # constant rate
    kl = parse("train#handlers")[2]
    assert kl.warmup == 0 and kl.beta == 1.0
    assert {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {0.1}

    DEMO_VAE_OVERRIDES = short_schedule_overrides()  # configs/train_short.json, merged after train.json
    demo = bundle_workflow("ad_vae3d", ["train.json", "train_short.json"], "train", **base)
    demo.initialize()
    parse = demo.parser.get_parsed_content
    opt, net = parse("optimizer"), parse("network")
    lr, scale = DEMO_VAE_OVERRIDES["learning_rate"], DEMO_VAE_OVERRIDES["latent_head_lr_scale"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, lr * scale])
    latent_head = {id(p) for m in (net.mu, net.logvar) for p in m.parameters()}
    assert {id(p) for p in opt.param_groups[1]["params"]} == latent_head
    factor = parse("lr_scheduler").lr_lambdas[0]
    total = DEMO_VAE_OVERRIDES["epochs"] * len(parse("train#dataloader"))  # 2 volumes at batch 2: one step per epoch
    assert factor.warmup == DEMO_VAE_OVERRIDES["lr_warmup_iterations"] and factor.total == total
    m = mean_intensity(parse("train#dataset"))
    assert net.decoder[-1][0].bias.item() == pytest.approx(np.log(m / (1 - m)), rel=1e-5)
    momenta = {b.momentum for b in net.modules() if isinstance(b, torch.nn.BatchNorm3d)}
    assert momenta == {DEMO_VAE_OVERRIDES["batchnorm_momentum"]}
