"""ad_vae3d's learning-rate schedule (:class:`common.engines.WarmupCosineFactor`) against MONAI's
``WarmupCosineSchedule``: the rates an optimizer gets step by step, and why ours is kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.optimizers import WarmupCosineSchedule

from common.engines import WarmupCosineFactor


def _rates(make_scheduler, steps: int, base_lr: float = 1e-3) -> np.ndarray:
    """The learning rate of each of ``steps`` optimizer steps (the scheduler stepped after each, as
    ``LRSchedulerHandler(epoch_level=False)`` does)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


def _old_formula(i: int, warmup: int, total: int, final: float) -> float:
    """The schedule as written before it was a class: linear warm-up to 1, half cosine to ``final``."""
    if i < warmup:
        return (i + 1) / warmup
    progress = min(1.0, (i - warmup) / (total - 1 - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(("warmup", "total", "final"), [(4, 9, 0.1), (50, 600, 0.02), (1, 30, 0.0)])
def test_lambda_lr_gives_the_formula_per_step(warmup, total, final):
    got = _rates(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosineFactor(warmup, total, final)),
                 total + 3)
    expected = 1e-3 * np.array([_old_formula(i, warmup, total, final) for i in range(total + 3)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert got[total - 1:] == pytest.approx(1e-3 * final)  # the floor from the last iteration on


@pytest.mark.parametrize("warmup_multiplier", [0.0, 0.25])
def test_monai_warmup_cosine_schedule_gives_other_rates(warmup_multiplier):
    """MONAI's schedule, set as close as it goes (same warm-up length, same total, ``end_lr`` at the floor):
    the first step, the warm-up steps and the decay differ, so it does not replace ours."""
    warmup, total, final, base = 50, 600, 0.02, 1e-3
    ours = _rates(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosineFactor(warmup, total, final)), total)
    monai = _rates(lambda opt: WarmupCosineSchedule(opt, warmup, total, end_lr=final * base,
                                                    warmup_multiplier=warmup_multiplier), total)
    assert monai[0] == pytest.approx(warmup_multiplier * base) and ours[0] == pytest.approx(base / warmup)
    assert np.abs(monai[:warmup] - ours[:warmup]).max() > 0.1 * base / warmup
    # MONAI clips its cosine (which reaches 0 at t_total) at end_lr: the floor comes before the last step
    floor = np.flatnonzero(np.isclose(monai, final * base, rtol=1e-9, atol=0))
    assert floor.size and floor[0] < total - 2
    assert np.isclose(ours[warmup:], final * base, rtol=1e-9, atol=0).sum() == 1  # ours: at the last step only
    assert np.abs(monai[warmup:] - ours[warmup:]).max() > 1e-3 * base
