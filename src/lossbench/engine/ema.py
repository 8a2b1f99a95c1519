"""Exponential moving average of a model's weights (Polyak averaging, as timm's ModelEmaV2).

Built on ``torch.optim.swa_utils.AveragedModel`` with its EMA update; buffers
(batch-norm running statistics) are averaged too, so the averaged model can
be evaluated as is.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of ``model`` whose ``update_parameters(model)`` does ema = decay * ema + (1 - decay) * model."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
