"""Cooperative gradient gates: Eq. 5 of the seed, the plain sum of Eq. 4,
and the similarity weight of the published version (ECCV 2024).

Torch-only. :class:`~odm_mm.optim.CooperativeOptimWrapper` calls
:func:`merge_gradients` after both gradients are known (and synchronised
across ranks). ``g_V`` below is the regulariser's gradient: L_V (seed) or
L_M (published).

Eq. 5 (``mode='cooperative'``), per parameter element::

    g = g_R + g_V   if g_R * g_V >= 0
    g = g_R         otherwise

Published version (``mode='similarity'``)::

    g = g_R + sim(g_R, g_V) g_V,   sim(a, b) = (cos(a, b) + 1) / 2 in [0, 1]

with one cosine over the gradient vectors of all parameters that have a
regulariser gradient (the update rule is written for the parameter vector
theta), or one cosine per parameter tensor (``mode='similarity_tensor'``,
a reading the text leaves open). A zero vector has cosine 0 (weight 1/2).

Elements where the reconstruction gradient is missing (``None``, or zero)
count as cooperative (``0 * g_V >= 0``). The conflict ratio (Fig. 2) is the
share of elements with ``g_R * g_V < 0`` among the elements with a non-zero
L_V gradient. (Counting only non-zero elements makes the ratio independent of
whether an unreachable parameter reports ``None`` or zeros -- DDP's output
sink turns the former into the latter.)
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['LossParts', 'GateStats', 'gate', 'similarity',
           'merge_gradients', 'MODES']

MODES = ('cooperative', 'plain', 'similarity', 'similarity_tensor')


class LossParts(NamedTuple):
    """A loss split into reconstruction L_R and regularisation (L_V or
    L_M); ``exclude``: parameters the regulariser's gradient is not applied
    to (they learn from L_R alone)."""
    recon: Tensor
    reg: Tensor
    exclude: Tuple[Tensor, ...] = ()

    def total(self) -> Tensor:
        """L_R + L_V (the Eq. 4 objective)."""
        return self.recon + self.reg


def gate(g_r: Tensor, g_v: Tensor,
         mode: str = 'cooperative') -> Tuple[Tensor, Tensor]:
    """Combine one parameter's gradients.

    Args:
        g_r: Gradient of L_R.
        g_v: Gradient of L_V (same shape).
        mode: ``'cooperative'`` (Eq. 5) or ``'plain'`` (Eq. 4).

    Returns:
        ``(combined gradient, number of conflicting elements)``; the count is
        a 0-dim tensor on the gradients' device (no host synchronisation),
        reported in both modes.
    """
    if mode not in MODES:
        raise ValueError(f'gate mode must be one of {MODES}, got {mode!r}')
    agree = (g_r * g_v) >= 0
    conflicts = agree.numel() - agree.sum()
    if mode == 'plain':
        return g_r + g_v, conflicts
    if mode in ('similarity', 'similarity_tensor'):
        return g_r + similarity(g_r, g_v) * g_v, conflicts
    return g_r + torch.where(agree, g_v, torch.zeros_like(g_v)), conflicts


def similarity(a: Tensor, b: Tensor) -> Tensor:
    """``(cos(a, b) + 1) / 2`` of two gradient vectors (0-dim tensor; a
    cosine with a zero vector counts as 0). Accumulates in float64."""
    a64, b64 = a.reshape(-1).double(), b.reshape(-1).double()
    den = a64.norm() * b64.norm()
    cos = torch.where(den > 0, (a64 @ b64) / den.clamp_min(1e-300),
                      torch.zeros_like(den))
    return ((cos + 1) / 2).to(a.dtype)


class GateStats(NamedTuple):
    """What one gated update measured (all over the elements of the
    parameters that have an L_V gradient).

    Attributes:
        conflicts: Elements with ``g_R * g_V < 0``.
        total: Elements with a non-zero L_V gradient.
        norm_r: ``||g_R||_2`` over those parameters.
        norm_v: ``||g_V||_2`` over those parameters (before gating).
        dominant: Elements with ``|g_V| > |g_R|`` (where L_V could flip the
            sign of the update if it were added).
        weight: The similarity weight applied to ``g_V`` (similarity
            modes: the global one, or the element-weighted mean of the
            per-tensor ones); 1 (plain) or the share of agreeing elements
            (cooperative) otherwise.
    """
    conflicts: int
    total: int
    norm_r: float
    norm_v: float
    dominant: int
    weight: float = 1.0

    @property
    def conflict_ratio(self) -> float:
        """``conflicts / total`` (0 when nothing has an L_V gradient)."""
        return self.conflicts / self.total if self.total else 0.0

    @property
    def grad_ratio(self) -> float:
        """``||g_V|| / ||g_R||`` (inf when g_R is zero)."""
        return self.norm_v / self.norm_r if self.norm_r else float('inf')


def merge_gradients(params: Sequence[Tensor],
                    reg_grads: Sequence[Optional[Tensor]],
                    mode: str = 'cooperative') -> GateStats:
    """Add the gated L_V gradients into ``p.grad`` in place.

    All gradients are gated in one flat vector (a handful of kernels instead
    of several per parameter), then copied back.

    Args:
        params: Parameters whose ``.grad`` holds the L_R gradient (or None).
        reg_grads: The L_V gradient per parameter (None where unused).
        mode: See :func:`gate`.

    Returns:
        :class:`GateStats` (conflicting elements, elements with a non-zero
        L_V gradient, both gradient norms, elements where L_V dominates),
        read from the device once.
    """
    pairs = [(p, g_v) for p, g_v in zip(params, reg_grads) if g_v is not None]
    if not pairs:
        return GateStats(0, 0, 0.0, 0.0, 0)
    for p, g_v in pairs:
        if p.grad is None:
            p.grad = torch.zeros_like(g_v)
    flat_r = torch.cat([p.grad.reshape(-1) for p, _ in pairs])
    flat_v = torch.cat([g_v.reshape(-1) for _, g_v in pairs])
    sizes = [g_v.numel() for _, g_v in pairs]
    if mode in ('similarity', 'similarity_tensor'):
        if mode == 'similarity':  # one weight, computed once
            scale = similarity(flat_r, flat_v)
            weight = scale.double()
        else:  # one weight per tensor, repeated over its elements
            weights = torch.stack([similarity(p.grad, g_v)
                                   for p, g_v in pairs]).double()
            n = torch.tensor(sizes, device=flat_v.device)
            scale = torch.repeat_interleave(weights.to(flat_v.dtype), n)
            weight = (weights * n.double()).sum() / sum(sizes)
        merged = flat_r + scale * flat_v
        agree = (flat_r * flat_v) >= 0
        conflicts = agree.numel() - agree.sum()
    else:
        merged, conflicts = gate(flat_r, flat_v, mode)
        weight = torch.ones((), dtype=torch.float64, device=flat_v.device) \
            if mode == 'plain' else \
            1 - conflicts.double() / max(flat_v.numel(), 1)
    # one host read; float64 keeps the counts exact up to 2**53
    counts = torch.stack([
        conflicts.double(), torch.count_nonzero(flat_v).double(),
        flat_r.double().norm(), flat_v.double().norm(),
        (flat_v.abs() > flat_r.abs()).sum().double(), weight]).tolist()
    chunks = torch.split(merged, sizes)
    torch._foreach_copy_([p.grad for p, _ in pairs],
                         [c.view_as(p.grad) for (p, _), c in zip(pairs,
                                                                  chunks)])
    return GateStats(int(counts[0]), int(counts[1]), float(counts[2]),
                     float(counts[3]), int(counts[4]), float(counts[5]))


def flatten_grads(grads: Sequence[Optional[Tensor]]) -> Tuple[Tensor, List]:
    """Concatenate the non-None gradients (for one all-reduce)."""
    present = [g.reshape(-1) for g in grads if g is not None]
    shapes = [g.shape if g is not None else None for g in grads]
    return (torch.cat(present) if present else torch.zeros(0)), shapes


def unflatten_grads(flat: Tensor,
                    shapes: Sequence[Optional[torch.Size]]
                    ) -> List[Optional[Tensor]]:
    """Inverse of :func:`flatten_grads`."""
    out: List[Optional[Tensor]] = []
    offset = 0
    for shape in shapes:
        if shape is None:
            out.append(None)
            continue
        n = int(torch.Size(shape).numel())
        out.append(flat[offset:offset + n].view(shape))
        offset += n
    return out
