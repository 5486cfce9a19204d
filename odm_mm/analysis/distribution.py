"""Feature-distribution analysis: the paper's Fig. 1 and Fig. 3.

Glue (mmengine/mmagic for building the model and the data; the statistics
are :mod:`odm_mm.calibration`'s). For any SR config + checkpoint:

* an ODM/PAMS checkpoint (``ODMEditModel``): its QuantConv layers are
  observed with quantization on, i.e. the tensor each quantizer receives
  (after the distribution offsets), against the learned range;
* an FP32 checkpoint (``BaseEditModel``): the convs the ODM preset would
  quantize are swapped for QuantConv with quantization switched off (the
  network's function is unchanged) and observed; the range drawn is the one
  calibration would initialise (mean 1st/99th percentile, Sec. 3.1).

:func:`collect` returns per-layer :class:`~odm_mm.calibration.LayerStats`
(Eq. 6 ``M_mu``, ``M_sigma``), per-channel mean/std of every layer, and
samples of one layer's values per channel and per image;
:func:`plot_fig1` / :func:`plot_fig3` draw them.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..calibration import FeatureObserver, select_top_p
from ..layers import QuantConv
from ..swap import quant_convs, swap_convs

__all__ = ['load_model', 'test_images', 'collect', 'layer_range',
           'plot_fig1', 'plot_fig3']


def load_model(cfg, checkpoint: str) -> Tuple[nn.Module, bool]:
    """Build ``cfg.model``, load ``checkpoint``; returns (model, quantized).

    FP32 models get their body convs swapped with quantization disabled.
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmengine.registry import init_default_scope

    from mmagic.registry import MODELS
    import odm_mm  # noqa: F401  (registers ODMEditModel)
    init_default_scope(cfg.get('default_scope', 'mmagic'))
    model_cfg = dict(cfg.model)
    model_cfg.pop('fp32_checkpoint', None)
    model = MODELS.build(model_cfg)
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    gen_keys = {k for k in model.state_dict() if k.startswith('generator.')}
    missing = sorted(k for k in gen_keys if k not in state)
    if missing:
        raise ValueError(f'checkpoint {checkpoint} does not fit the config: '
                         f'missing {missing[:5]} ({len(missing)} keys)')
    model.load_state_dict({k: v for k, v in state.items()
                           if k in model.state_dict()}, strict=False)
    quantized = bool(quant_convs(model.generator))
    if not quantized:
        swap_convs(model.generator)
        for _, m in quant_convs(model.generator):
            m.disable_quant()
    model.eval()
    return model, quantized


def test_images(cfg, num: int) -> List[Tuple[str, dict]]:
    """Up to ``num`` packed samples of the config's first test set."""
    from mmengine.registry import init_default_scope

    from mmagic.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmagic'))
    loader = cfg.test_dataloader
    if isinstance(loader, (list, tuple)):
        loader = loader[0]
    ds = DATASETS.build(loader['dataset'])
    out = []
    for i in range(min(num, len(ds))):
        item = ds[i]
        out.append((osp.basename(item['data_samples'].img_path), item))
    return out


class _Tee(FeatureObserver):
    """FeatureObserver that also keeps per-channel samples of each call."""

    def __init__(self, per_channel: int = 4000, seed: int = 0) -> None:
        super().__init__()
        self.per_channel = per_channel
        self.samples: List[Tensor] = []  # one (C, k) tensor per call
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:  # noqa: D102
        super().update(x)
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).float()
        n = flat.shape[1]
        idx = torch.randperm(n, generator=self.gen)[:self.per_channel]
        self.samples.append(flat[:, idx].cpu())


@torch.no_grad()
def collect(model: nn.Module, items: List[Tuple[str, dict]],
            layer: Optional[str] = None) -> Dict:
    """Observe every quantized layer on ``items``; keep samples of ``layer``.

    Args:
        model: From :func:`load_model`.
        items: From :func:`test_images`.
        layer: Layer to sample for Fig. 1 (default: largest ``M_mu``,
            chosen after a first pass).

    Returns:
        ``{'stats': {name: LayerStats}, 'channels': {name: (mu_c, sigma_c)},
        'layer': name, 'samples': [(image, (C, k) array)]}``.
    """
    convs = quant_convs(model.generator)
    names = [n for n, _ in convs]
    if layer is not None and layer not in names:
        raise ValueError(f'--layer {layer!r} is not a quantized layer; '
                         f'choose from {names}')
    obs = {n: FeatureObserver() for n in names}
    if layer is not None:
        obs[layer] = _Tee()
    per_image = []
    try:
        for n, m in convs:
            m.observer = obs[n]
        for name, item in items:
            data = model.data_preprocessor(
                dict(inputs=[item['inputs']],
                     data_samples=[item['data_samples']]), False)
            before = len(obs[layer].samples) if layer else 0
            model.generator(data['inputs'])
            if layer:
                per_image.append((name, torch.cat(
                    obs[layer].samples[before:], dim=1).numpy()))
    finally:
        for _, m in convs:
            m.observer = None
    stats = {n: o.stats() for n, o in obs.items()}
    channels = {}
    for n, o in obs.items():
        mu = o.ch_sum / o.count
        channels[n] = (mu.numpy(), (o.ch_sqsum / o.count - mu.pow(2))
                       .clamp_min(0).sqrt().numpy())
    if layer is None:
        layer = max(stats, key=lambda n: stats[n].m_mu)
        return dict(collect(model, items, layer), default_layer=True)
    return dict(stats=stats, channels=channels, layer=layer,
                samples=per_image)


def layer_range(conv: QuantConv, stats) -> Tuple[float, float, str]:
    """(lower, upper, label) of the quantization range drawn for a layer
    (a quantizer whose range is set per input at run time, e.g. DAQ, has no
    static range to draw: the calibration range is drawn)."""
    q = conv.act_quantizer
    if conv.quant_enabled and bool(q.initialized) and q.has_integer_form:
        form = q.integer_form()
        return (float(form.clip_lo), float(form.clip_hi),
                f'learned {conv.method} range (W{conv.w_bits}A{conv.a_bits})')
    return stats.lower, stats.upper, 'calibration range (P1/P99)'


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_fig1(result: Dict, model: nn.Module, path: str,
              channels: int = 12, seed: int = 0) -> str:
    """Fig. 1: per-channel and per-image distributions vs the range."""
    plt = _plt()
    name = result['layer']
    conv = model.generator.get_submodule(name)
    lo, up, label = layer_range(conv, result['stats'][name])
    allv = np.concatenate([s for _, s in result['samples']], axis=1)
    rng = np.random.default_rng(seed)
    ch = np.sort(rng.choice(allv.shape[0], min(channels, allv.shape[0]),
                            replace=False))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6),
                             gridspec_kw=dict(width_ratios=[2, 1]))
    box = dict(whis=(1, 99), showfliers=False, widths=0.6)
    axes[0].boxplot([allv[c] for c in ch], **box)
    axes[0].set_xticks(range(1, len(ch) + 1), [str(c) for c in ch])
    axes[0].set_xlabel('channel (random subset)')
    axes[0].set_title('per channel (all images)', fontsize=9)
    axes[1].boxplot([s.ravel() for _, s in result['samples']], **box)
    axes[1].set_xticks(range(1, len(result['samples']) + 1),
                       [osp.splitext(n)[0][:10] for n, _ in
                        result['samples']], rotation=45, fontsize=7)
    axes[1].set_title('per image (all channels)', fontsize=9)
    bits = conv.a_bits if conv.quant_enabled else None
    for ax in axes:
        ax.axhline(lo, color='tab:red', lw=1.2)
        ax.axhline(up, color='tab:red', lw=1.2, label=label)
        if bits and bits <= 4:
            for k in range(1, 2**bits - 1):
                ax.axhline(lo + k * (up - lo) / (2**bits - 1),
                           color='tab:red', lw=0.5, ls=':')
        ax.grid(alpha=0.3, axis='y')
    axes[0].set_ylabel(f'input feature of {name}')
    axes[0].legend(fontsize=7, loc='upper right')
    fig.suptitle('Distribution mismatch (cf. paper Fig. 1): boxes = '
                 'quartiles, whiskers = 1st/99th percentiles', fontsize=9)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_fig3(result: Dict, path: str, ratio: float = 0.3) -> str:
    """Fig. 3: per-layer M_mu / M_sigma and three example layers."""
    plt = _plt()
    stats = result['stats']
    names = list(stats)
    mmu = [stats[n].m_mu for n in names]
    msig = [stats[n].m_sigma for n in names]
    sel_mu, sel_sig = select_top_p(mmu, ratio), select_top_p(msig, ratio)
    fig, axd = plt.subplot_mosaic(
        [['mu'] * 3 + ['sig'] * 3, ['a', 'a', 'b', 'b', 'c', 'c']],
        figsize=(11, 6.5), constrained_layout=True)
    x = np.arange(len(names))
    for key, vals, sel, lab in [
            ('mu', mmu, sel_mu, 'M_mu = std of channel means'),
            ('sig', msig, sel_sig, 'M_sigma = std of channel stds')]:
        ax = axd[key]
        ax.bar(x, vals, color=['tab:orange' if s else 'tab:gray'
                               for s in sel])
        ax.set_title(f'{lab} (top {ratio:.0%} highlighted)', fontsize=9)
        ax.set_xlabel('quantized layer index')
        ax.set_xticks(x[::max(1, len(x) // 16)])
        ax.grid(alpha=0.3, axis='y')
    low = min(names, key=lambda n: stats[n].m_mu + stats[n].m_sigma)
    picks = [('(a) small mismatch', low),
             ('(b) largest M_sigma', names[int(np.argmax(msig))]),
             ('(c) largest M_mu', names[int(np.argmax(mmu))])]
    for key, (title, n) in zip('abc', picks):
        ax = axd[key]
        mu, sd = result['channels'][n]
        order = np.argsort(mu)
        ax.errorbar(np.arange(len(mu)), mu[order], yerr=sd[order], fmt='o',
                    ms=2, lw=0.7)
        ax.set_title(f'{title}: {n}\nM_mu {stats[n].m_mu:.3f}, M_sigma '
                     f'{stats[n].m_sigma:.3f}', fontsize=8)
        ax.set_xlabel('channel (sorted by mean)')
        ax.grid(alpha=0.3)
    axd['a'].set_ylabel('channel mean +- std')
    fig.suptitle('Channel-wise mismatch per layer (cf. paper Fig. 3)',
                 fontsize=10)
    return _save(fig, path, plt)


def _save(fig, path: str, plt) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
