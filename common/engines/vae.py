"""A ``SupervisedTrainer`` for VAEs: MONAI's iteration (AMP, gradient accumulation, events) unchanged, with the
network's ``(reconstruction, mu, logvar)`` turned into loggable outputs afterwards."""

from __future__ import annotations

import torch
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys

__all__ = ["VAETrainer", "RECON_LOSS", "KL_LOSS"]

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
