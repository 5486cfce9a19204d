"""Check and time the torch-only ODM layer on any device (no mmcv/mmagic).

Builds an EDSR-baseline replica (same module names as mmagic's EDSRNet),
swaps its body convs, calibrates, and runs a few QAT steps with the exact
ODM update (L1 + SKT + L_V, Eq. 5 gate from :mod:`odm_mm.gate`) and with
PAMS, then:

* checks that the device result equals a CPU run of the same step
  (forward output and the gated gradients, float tolerance);
* prints the time per training step of ODM vs PAMS.

Usage::

    python tools/torch_only_check.py --device cuda --steps 20
"""
import argparse
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from odm_mm.calibration import apply_calibration, calibrate  # noqa: E402
from odm_mm.gate import merge_gradients  # noqa: E402
from odm_mm.losses import skt_loss, variance_regularization  # noqa: E402
from odm_mm.swap import quant_convs, swap_convs  # noqa: E402


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with identity skip (as mmagic's)."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x)))


class EDSRNet(nn.Module):
    """EDSR-baseline x4 replica (64 channels, 16 blocks)."""

    def __init__(self, c=64, n=16, scale=4):
        super().__init__()
        self.conv_first = nn.Conv2d(3, c, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(c) for _ in range(n)])
        self.conv_after_body = nn.Conv2d(c, c, 3, 1, 1)
        ups = []
        for _ in range(scale // 2):
            ups += [nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*ups)
        self.conv_last = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, x):
        x = self.conv_first(x)
        feat = self.conv_after_body(self.body(x))
        self.feat = feat
        return self.conv_last(self.upsample(feat + x))


def build(method, device, seed=0):
    """method: 'pams', 'odmq' (ODM quantizer alone) or 'odm' (full)."""
    torch.manual_seed(seed)
    net = EDSRNet()
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    swap_convs(net, w_bits=2, a_bits=2,
               method='pams' if method == 'pams' else 'odm')
    for _, m in quant_convs(net):
        m.record_std = method == 'odm'
    g = torch.Generator().manual_seed(1)
    calib = [torch.rand(4, 3, 48, 48, generator=g) for _ in range(2)]
    stats = calibrate(net, calib)
    apply_calibration(net, stats, 0.3, method == 'odm', method == 'odm')
    return net.to(device), teacher.to(device)


TIMES = {}


def _tick(name, t0, sync):
    if sync:
        torch.cuda.synchronize()
    t = time.perf_counter()
    TIMES[name] = TIMES.get(name, 0.0) + t - t0
    return t


def step(net, teacher, lr_img, hr_img, method, opt=None):
    sync = lr_img.is_cuda
    t = time.perf_counter()
    net.train()
    sr = net(lr_img)
    t = _tick(f'{method} fwd', t, sync)
    with torch.no_grad():
        teacher(lr_img)
    t = _tick(f'{method} teacher', t, sync)
    recon = F.l1_loss(sr, hr_img) + 1000 / 255 * skt_loss(net.feat,
                                                          teacher.feat)
    params = [p for p in net.parameters() if p.requires_grad]
    ratio = float('nan')
    if method == 'odm':
        stds = [m.feature_std for _, m in quant_convs(net)]
        reg = variance_regularization(stds, 1e-4)
        g_v = torch.autograd.grad(reg, params, retain_graph=True,
                                  allow_unused=True)
        t = _tick(f'{method} grad L_V', t, sync)
        recon.backward()
        t = _tick(f'{method} bwd L_R', t, sync)
        ratio = merge_gradients(params, g_v).conflict_ratio
        t = _tick(f'{method} gate', t, sync)
    else:
        recon.backward()
        t = _tick(f'{method} bwd L_R', t, sync)
    grads = [p.grad.detach().clone() if p.grad is not None else None
             for p in params]
    if opt is not None:
        opt.step()
        opt.zero_grad()
    else:
        for p in params:
            p.grad = None
    return sr.detach(), grads, ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available()
                    else 'cpu')
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--batch', type=int, default=16)
    args = ap.parse_args()
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(2)
    lr_img = torch.rand(args.batch, 3, 48, 48, generator=g)
    hr_img = torch.rand(args.batch, 3, 192, 192, generator=g)
    print(f'device={dev} torch={torch.__version__} '
          f'{torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""}')
    rows = []
    for method in ('pams', 'odmq', 'odm'):
        # 1) same step on CPU and on the device (TF32 off): outputs and grads
        tf32 = (torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        # float64: no rounding-boundary flips from float32 conv differences
        net_c, t_c = build(method, 'cpu')
        net_d, t_d = build(method, dev)
        net_c, t_c, net_d, t_d = (m.double() for m in (net_c, t_c, net_d,
                                                        t_d))
        x64, y64 = lr_img[:2].double(), hr_img[:2].double()
        sr_c, gr_c, r_c = step(net_c, t_c, x64, y64, method)
        sr_d, gr_d, r_d = step(net_d, t_d, x64.to(dev), y64.to(dev), method)
        net_d, t_d = net_d.float(), t_d.float()
        out_err = float((sr_c - sr_d.cpu()).abs().max())
        g_err = max(float((a - b.cpu()).abs().max() /
                          (a.abs().max() + 1e-12))
                    for a, b in zip(gr_c, gr_d) if a is not None)
        torch.backends.cudnn.allow_tf32 = tf32[0]
        torch.backends.cuda.matmul.allow_tf32 = tf32[1]
        # 2) timing on the device (default math settings)
        opt = torch.optim.Adam([p for p in net_d.parameters()
                                if p.requires_grad], lr=1e-4)
        x, y = lr_img.to(dev), hr_img.to(dev)
        for _ in range(3):
            step(net_d, t_d, x, y, method, opt)
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ratios = []
        for _ in range(args.steps):
            ratios.append(step(net_d, t_d, x, y, method, opt)[2])
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        for k in list(TIMES):
            if k.startswith(method + ' '):
                TIMES[k] = 0.0
        for _ in range(args.steps):
            step(net_d, t_d, x, y, method, opt)
        rows.append((method, dt, out_err, g_err, r_c, r_d, ratios[-1]))
    print(f'{"method":<6} {"s/step":>8} {"max|out cpu-dev|":>17} '
          f'{"max rel grad err":>17} {"conflict cpu":>13} '
          f'{"conflict dev":>13} {"conflict@end":>13}')
    for r in rows:
        print(f'{r[0]:<6} {r[1]:>8.4f} {r[2]:>17.2e} {r[3]:>17.2e} '
              f'{r[4]:>13.4f} {r[5]:>13.4f} {r[6]:>13.4f}')
    print('breakdown (s/step, synchronised):', ', '.join(
        f'{k}={v / args.steps:.4f}' for k, v in TIMES.items() if v))
    print(f'step time vs PAMS: ODM quantizer alone {rows[1][1] / rows[0][1]:.2f}x'
          f', full ODM {rows[2][1] / rows[0][1]:.2f}x')


if __name__ == '__main__':
    main()
