"""Export a trained ODM/PAMS model to the integer artifact (and ONNX).

Builds ``cfg.model`` through mmagic's MODELS registry (after
``import odm_mm``), loads the checkpoint's ``state_dict`` strictly, writes
the artifact of ``model.generator`` into OUT (``manifest.json`` +
``tensors.bin``, see docs/deploy.md) and prints its size next to the storage
figure. ``--onnx`` also writes ``OUT/model.onnx`` (QDQ);
``--check`` runs a random input through the fake-quant generator, the
integer runtime (and onnxruntime) and prints the largest differences.

Examples::

    python tools/deploy/export.py configs/odm/edsr_x4_w4a4.py \\
        work_dirs/odm_edsr_x4_w4a4/best.pth deploy/edsr_w4a4 --onnx --check
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

import odm_mm  # noqa: E402,F401  (registers odm_mm into mmagic)
from odm_mm.data_root import merge_cfg_options  # noqa: E402
from odm_mm.deploy.export import export_artifact  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a quantized generator for deployment')
    parser.add_argument('config', help='config of the quantized model')
    parser.add_argument('checkpoint', help='trained checkpoint (.pth)')
    parser.add_argument('out', help='artifact folder to write')
    parser.add_argument('--onnx', action='store_true',
                        help='also write OUT/model.onnx (QDQ)')
    parser.add_argument('--onnx-container-bits', type=int, choices=[2, 4, 8],
                        default=None, help='minimum integer width of the '
                        'ONNX QDQ tensors (default: smallest that fits)')
    parser.add_argument('--check', action='store_true',
                        help='compare fake-quant, integer runtime (and '
                        'onnxruntime) outputs on a random input')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def build_model(cfg: Config, checkpoint: str) -> torch.nn.Module:
    """``MODELS.build(cfg.model)`` with the checkpoint loaded strictly."""
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(cfg.model)
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    model.load_state_dict(state, strict=True)
    return model.eval()


def check(generator, out_dir: str, onnx_path: str = None) -> None:
    """Print max |difference| of runtime (and ONNX) vs the fake-quant net."""
    from odm_mm.deploy.runtime import load_runtime
    first = next(m for m in generator.modules()
                 if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(1, first.in_channels, 32, 32,
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = generator(x)
        y = load_runtime(out_dir)(x)
    print(f'integer runtime vs fake-quant: max |diff| = '
          f'{(y - ref).abs().max().item():.3g}')
    if onnx_path:
        from odm_mm.deploy.onnx_export import ort_session
        y = ort_session(onnx_path).run(None, {'input': x.numpy()})[0]
        print(f'onnxruntime vs fake-quant:     max |diff| = '
              f'{abs(y - ref.numpy()).max():.3g}')


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)
    model = build_model(cfg, args.checkpoint)
    generator = model.generator
    res = export_artifact(generator, args.out, cfg.model.generator)
    layers = res.manifest['quant_layers']
    print(f'wrote {args.out}: {len(layers)} integer convs, '
          f'{len(res.manifest["fp32"])} FP32 tensors')
    print(f'artifact: {res.artifact_bytes} bytes (tensors.bin '
          f'{res.blob_bytes}, manifest.json '
          f'{res.artifact_bytes - res.blob_bytes})')
    print(f'storage figure: {res.storage_bits} bits = '
          f'{res.storage_bytes:.0f} bytes = '
          f'{res.storage_bits / 32e3:.1f}K; artifact / storage = '
          f'{res.ratio:.4f}')
    try:
        from odm_mm.analysis.complexity import storage_bits
        print(f'odm_mm.analysis.complexity storage: '
              f'{storage_bits(generator)} bits')
    except ImportError:
        pass
    onnx_path = None
    if args.onnx:
        from odm_mm.deploy.onnx_export import export_onnx
        onnx_path = osp.join(args.out, 'model.onnx')
        info = export_onnx(generator, onnx_path,
                           container_bits=args.onnx_container_bits)
        print(f'wrote {onnx_path} (opset {info.opset}, containers '
              f'{sorted({c["weight"] for c in info.containers.values()})}'
              f'-bit weights)')
    if args.check:
        check(generator, args.out, onnx_path)


if __name__ == '__main__':
    main()
