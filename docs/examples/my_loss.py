"""A loss of your own, registered under a name so that configs and sweeps can use it.

tests/test_docs.py runs this file (``python docs/examples/my_loss.py``) in a fresh process.
"""

import torch
import torch.nn.functional as F
from torch import nn

import lossbench
from lossbench.losses import LossContext, register_loss


@register_loss("poly1")
class Poly1CrossEntropy(nn.Module):
    """Poly-1 cross-entropy CE + epsilon (1 - p_t), averaged over samples (Leng et al. 2022).

    Formula:
        L = mean_i [ -log p_t + epsilon (1 - p_t) ],  p_t = softmax(z_i)_{y_i}

    Paper:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of
        Classification Loss Functions" (ICLR 2022).

    Official code:
        None followed: the paper's Poly-1 formula.

    Checked by:
        tests/test_docs.py::test_the_own_loss_example_registers_and_computes_its_formula
    """

    def __init__(self, ctx: LossContext, epsilon: float = 1.0) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        self.ignore_index = ctx.ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=self.ignore_index)
        valid = target != self.ignore_index
        poly = ce + self.epsilon * (1 - torch.exp(-ce))
        return (poly * valid).sum() / valid.sum().clamp(min=1)


if __name__ == "__main__":
    # the registered name works in a spec, alone or in a sum, like any built-in loss
    loss = lossbench.build_loss("poly1(epsilon=2) + 0.5 * ce", num_classes=4)
    logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
    print(f"poly1(epsilon=2) + 0.5 * ce = {loss(logits, target).item():.4f}")
