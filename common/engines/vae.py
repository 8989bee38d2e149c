"""A ``SupervisedTrainer`` for VAEs: MONAI's iteration (AMP, gradient accumulation, events) unchanged, with the
network's ``(reconstruction, mu, logvar)`` turned into loggable outputs afterwards; and the two schedules of the
short training recipe (learning-rate warm-up + cosine decay, KL warm-up), neutral by default."""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys

from common.losses.vae import kl_warmup_weight

__all__ = ["KL_LOSS", "RECON_LOSS", "KLWarmupHandler", "VAETrainer", "WarmupCosineFactor"]

#: Keys of the two loss terms in the trainer's ``engine.state.output`` (beside ``loss``).
RECON_LOSS, KL_LOSS = "recon_loss", "kl_loss"


class VAETrainer(SupervisedTrainer):
    """Trains a network that returns ``(reconstruction, mu, logvar)`` with a loss that has a ``terms``
    method (:class:`~common.losses.VAELoss`).

    After each iteration ``engine.state.output`` holds ``image``, ``label``, ``pred`` (the reconstruction,
    detached), ``loss`` and the unweighted terms ``recon_loss`` and ``kl_loss`` (so StatsHandler and
    TensorBoardStatsHandler can log them separately). The terms are recomputed without gradients from the
    outputs MONAI's iteration kept: two reductions over the batch, negligible next to the step.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not callable(getattr(self.loss_function, "terms", None)):
            raise TypeError(f"VAETrainer needs a loss with a terms() method, got {type(self.loss_function).__name__}")

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict) -> dict:
        output = super()._iteration(engine, batchdata)
        prediction = output[CommonKeys.PRED]
        if not (isinstance(prediction, (tuple, list)) and len(prediction) == 3):
            raise TypeError("VAETrainer's network must return (reconstruction, mu, logvar)")
        with torch.no_grad():
            terms = engine.loss_function.terms(prediction, output[CommonKeys.LABEL])
        output[CommonKeys.PRED] = prediction[0].detach()
        output[CommonKeys.LOSS] = output[CommonKeys.LOSS].detach()
        output[RECON_LOSS], output[KL_LOSS] = terms.reconstruction, terms.kl
        return output


class WarmupCosineFactor:
    """Learning-rate multiplier for ``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration
    (MONAI's ``LRSchedulerHandler(epoch_level=False)``): ``(i + 1) / warmup_iterations`` for the first
    ``warmup_iterations`` iterations ``i = 0, 1, ...``, then a half cosine from 1 down to ``final_fraction`` at
    iteration ``total_iterations - 1``, and ``final_fraction`` after. ``total_iterations = 0`` keeps 1 after the
    warm-up; ``(0, 0)`` is the constant 1 (the paper's fixed rate).

    Why: a warm-up keeps Adam's first, sign-like steps (its second-moment estimate starts from one gradient)
    small while the BatchNorm statistics settle; the decay lets a short, high-rate run settle into the
    minimum it reached instead of ending on a noisy step.

    Why not ``monai.optimizers.WarmupCosineSchedule``: no setting of it gives these per-step rates (tested in
    tests/test_warmup_cosine.py). Its warm-up is ``i / warmup`` (or ``m + (1 - m) i / warmup``), so the first step
    runs at rate 0 (or at ``m``), never at ``1 / warmup`` with equal increments up to 1; and it clips the cosine
    at ``end_lr`` instead of scaling it into ``[final_fraction, 1]``, so the decay reaches the floor early with a
    kink instead of ending there smoothly. The trained ad_vae3d weights and the model card's figures were made
    with this schedule.
    """

    def __init__(self, warmup_iterations: int = 0, total_iterations: int = 0, final_fraction: float = 0.0):
        self.warmup, self.total, self.final = int(warmup_iterations), int(total_iterations), float(final_fraction)
        if self.warmup < 0 or self.total < 0:
            raise ValueError(f"iteration counts must be >= 0, got warm-up {self.warmup}, total {self.total}")
        if self.total and self.total <= self.warmup:
            raise ValueError(f"total_iterations ({self.total}) must exceed warmup_iterations ({self.warmup}), or be 0")
        if not 0 <= self.final <= 1:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final}")

    def __call__(self, iteration: int) -> float:
        if iteration < self.warmup:
            return (iteration + 1) / self.warmup
        if not self.total:
            return 1.0
        progress = min(1.0, (iteration - self.warmup) / max(1, self.total - 1 - self.warmup))
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class KLWarmupHandler:
    """KL annealing: sets ``loss.beta`` to ``beta * kl_warmup_weight(i, warmup_iterations)`` before each training
    iteration ``i`` (0-based; :func:`~common.losses.vae.kl_warmup_weight`), so training starts as a plain
    auto-encoder and the KL term is brought in linearly (Bowman et al. 2016). ``warmup_iterations = 0`` leaves
    ``loss.beta`` at ``beta`` throughout.
    """

    def __init__(self, loss, warmup_iterations: int = 0, beta: float | None = None):
        if not hasattr(loss, "beta"):
            raise TypeError(f"KLWarmupHandler needs a loss with a beta attribute, got {type(loss).__name__}")
        if int(warmup_iterations) < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations}")
        self.loss, self.warmup = loss, int(warmup_iterations)
        self.beta = float(loss.beta if beta is None else beta)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        # ignite counts iterations from 1 and has already counted this one at ITERATION_STARTED
        self.loss.beta = self.beta * kl_warmup_weight(engine.state.iteration - 1, self.warmup)
