"""Variance regularisation (Eq. 2-3) and structured knowledge transfer (SKT).

Torch-only. The registered (mmagic) names are ``VarianceRegLoss`` and
``SKTLoss`` (see :mod:`odm_mm.registry`).

Pixel-scale convention. The paper (like EDSR/PAMS code) works on [0, 255]
pixels; mmagic on [0, 1]. For a network trained at [0, 1] the features, the
L1 loss and sigma(x_i) are all 1/255 of their [0, 255] counterparts, while the
SKT term (L2-normalised attention maps) is scale-free. The paper's objective
``L1 + 1000 L_SKT + lambda_V sum sigma`` at [0, 255] is therefore, divided by
255 (a global factor that Adam and the sign test of Eq. 5 ignore),
``L1 + (1000/255) L_SKT + lambda_V sum sigma`` at [0, 1]: lambda_V keeps its
paper value (1e-4 EDSR/SRResNet, 1e-5 RDN, Supplement S1) and the SKT weight
becomes 1000/255 = 3.92. Both are config options.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['variance_regularization', 'weighted_layer_sum', 'attention_map',
           'skt_loss', 'VarianceRegLoss', 'SKTLoss', 'PAPER_SKT_WEIGHT_01',
           'PAPER_LAMBDA_V']

#: lambda of Eq. 9 (1000 at [0, 255]) expressed at mmagic's [0, 1] scale.
PAPER_SKT_WEIGHT_01 = 1000.0 / 255.0
#: lambda_V of Supplement S1 (unchanged by the pixel-scale conversion).
PAPER_LAMBDA_V = {'EDSRNet': 1e-4, 'MSRResNet': 1e-4, 'RDNNet': 1e-5}


def variance_regularization(stds: Sequence[Tensor],
                            weight: float = 1.0) -> Tensor:
    """Eq. 3 summed over layers: ``weight * sum_i sigma(x_i)``.

    Args:
        stds: sigma(x_i) of every quantized layer (see
            :func:`odm_mm.layers.feature_std`).
        weight: lambda_V.
    """
    return weighted_layer_sum(
        stds, weight, 'variance_regularization: no feature std recorded; '
        'are there quantized layers with record_std=True and is the model '
        'in training mode?')


def weighted_layer_sum(terms: Sequence[Tensor], weight: float,
                       empty_message: str) -> Tensor:
    """``weight * sum_i terms_i`` of per-layer scalars (a regulariser's
    sum over the quantized layers); ValueError(``empty_message``) when no
    layer recorded one."""
    if len(terms) == 0:
        raise ValueError(empty_message)
    return weight * torch.stack([t.reshape(()) for t in terms]).sum()


def attention_map(feat: Tensor) -> Tensor:
    """Spatial attention map of PAMS's SKT: L2-normalised mean_c(f^2).

    Args:
        feat: (B, C, H, W) feature, or (B, N, C) tokens of a transformer
            (channel axis last, as a Linear sees them; the map is then over
            the N tokens).

    Returns:
        (B, H*W) (or (B, N)) maps with unit L2 norm per sample.
    """
    channel = -1 if feat.dim() == 3 else 1
    return F.normalize(feat.pow(2).mean(dim=channel).flatten(1), dim=1)


def skt_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Structured knowledge transfer: mean squared distance of the maps."""
    if student.shape != teacher.shape:
        raise ValueError(f'SKT: student feature {tuple(student.shape)} and '
                         f'teacher feature {tuple(teacher.shape)} differ')
    return (attention_map(student) - attention_map(teacher)).pow(2).mean()


class VarianceRegLoss(nn.Module):
    """L_V of Eq. 3: ``lambda_V * sum_i sigma(x_i)`` over quantized layers.

    Args:
        loss_weight: lambda_V (paper: 1e-4 EDSR/SRResNet, 1e-5 RDN; the same
            value applies at [0, 1] pixels, see module docstring).
        std_mode: ``'tensor'`` (sigma over the whole feature, default) or
            ``'sample'`` (per-sample sigma averaged over the batch); applied
            to the quantized layers by the model that owns them.
        normalize: ``'none'`` (Eq. 3 as written) or ``'range'``: each
            sigma(x_i) is divided by the detached width of its layer's
            quantization range, ``sum_i sigma(x_i) / sg(alpha_u - alpha_l)``.
            Not in the paper. Without normalisation layers, Eq. 3 can be
            lowered by shrinking a layer's output (the next conv and the
            learnable bounds absorb the factor) without changing any
            quantized value; measured against its range, sigma only falls
            when the feature really occupies less of the range the quantizer
            has. The terms are dimensionless (~0.1-0.3), so lambda_V values
            are not comparable between the two modes.
    """

    NORMALIZE = ('none', 'range')

    def __init__(self, loss_weight: float = 1e-4,
                 std_mode: str = 'tensor', normalize: str = 'none') -> None:
        super().__init__()
        if not loss_weight >= 0:
            raise ValueError(f'VarianceRegLoss.loss_weight must be >= 0, '
                             f'got {loss_weight}')
        if std_mode not in ('tensor', 'sample'):
            raise ValueError("VarianceRegLoss.std_mode must be 'tensor' or "
                             f"'sample', got {std_mode!r}")
        if normalize not in self.NORMALIZE:
            raise ValueError('VarianceRegLoss.normalize must be one of '
                             f'{self.NORMALIZE}, got {normalize!r}')
        self.loss_weight = float(loss_weight)
        self.std_mode = std_mode
        self.normalize = normalize

    def forward(self, stds: Sequence[Tensor],
                widths: Optional[Sequence[Tensor]] = None) -> Tensor:
        """L_V of the recorded ``stds``.

        Args:
            stds: sigma(x_i) per quantized layer.
            widths: The range width of each layer (used, detached, with
                ``normalize='range'``).
        """
        if self.normalize == 'range':
            if widths is None or len(widths) != len(stds):
                raise ValueError("VarianceRegLoss(normalize='range') needs "
                                 'one range width per recorded sigma')
            stds = [s / w.detach().clamp_min(1e-8)
                    for s, w in zip(stds, widths)]
        return variance_regularization(stds, self.loss_weight)


class SKTLoss(nn.Module):
    """PAMS structured knowledge transfer, weighted: ``w * L_SKT``.

    Args:
        loss_weight: lambda of Eq. 9 at [0, 1] pixels (default 1000/255, the
            paper's 1000 at [0, 255]; see module docstring).
    """

    def __init__(self, loss_weight: float = PAPER_SKT_WEIGHT_01) -> None:
        super().__init__()
        if not loss_weight >= 0:
            raise ValueError(f'SKTLoss.loss_weight must be >= 0, got '
                             f'{loss_weight}')
        self.loss_weight = float(loss_weight)

    def forward(self, student: Tensor,
                teacher: Optional[Tensor]) -> Tensor:  # noqa: D102
        return self.loss_weight * skt_loss(student, teacher)
