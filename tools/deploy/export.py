"""Export a trained ODM/PAMS model to the integer artifact (and ONNX).

Builds ``cfg.model`` through mmagic's MODELS registry (after
``import odm_mm``), loads the checkpoint's ``state_dict`` strictly, writes
the artifact of ``model.generator`` into OUT (``manifest.json`` +
``tensors.bin``, see docs/deploy.md) and prints its size next to the storage
figure. ``--onnx`` also writes ``OUT/model.onnx``: by default the integer
QDQ form that stock onnxruntime (default session options), TensorRT and NPU
toolchains run as integer convolutions; ``--onnx-form storage`` writes the
smallest containers (int2/int4 weight codes, float compute). ``--profile
deploy`` quantizes the remaining float convs (head, upsampler, tail) at W8A8
first (calibrated on real images, :mod:`odm_mm.deploy.profile`); the
artifact stays the trained model. ``--check`` runs real images (Set5 when
the data root has it, else scikit-image photographs) through the
fake-quant generator, the integer runtime and onnxruntime and prints the
largest differences and the PSNR differences.

Examples::

    python tools/deploy/export.py configs/odm/edsr_x4_w4a4.py \\
        work_dirs/odm_edsr_x4_w4a4/best.pth deploy/edsr_w4a4 --onnx --check
    python tools/deploy/export.py CONFIG CKPT OUT --onnx --profile deploy
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
                        help='also write OUT/model.onnx')
    parser.add_argument('--onnx-form', choices=['integer', 'storage'],
                        default='integer', help='integer: QDQ that '
                        'onnxruntime runs as integer convs (default); '
                        'storage: smallest int2/int4 containers, float '
                        'compute')
    parser.add_argument('--onnx-container-bits', type=int, choices=[2, 4, 8],
                        default=None, help='storage form: minimum integer '
                        'width of the QDQ tensors (default: smallest that '
                        'fits)')
    parser.add_argument('--onnx-reduce-range', action='store_true',
                        help='integer form: 7-bit weight codes, for x86 CPUs '
                        'without VNNI (costs accuracy, see docs/deploy.md)')
    parser.add_argument('--profile', choices=['body', 'deploy'],
                        default='body', help='body: the trained model as '
                        'is (default); deploy: also quantize the float '
                        'convs (head, upsampler, tail) at W8A8 for the ONNX '
                        'file')
    parser.add_argument('--check', action='store_true',
                        help='compare fake-quant, integer runtime (and '
                        'onnxruntime) outputs on real images')
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


def check(generator, out_dir: str, scale: int, onnx_path: str = None,
          onnx_reference=None) -> None:
    """Print max |difference| and PSNR of runtime and ONNX vs fake-quant.

    ``onnx_reference``: the fake-quant model the ONNX file was exported
    from (the deploy profile), default ``generator``.
    """
    from odm_mm.deploy.check import (check_images, compare, format_results,
                                     onnx_callable, tensor_fn)
    from odm_mm.deploy.runtime import load_runtime
    images = check_images(scale)
    ref = tensor_fn(generator)
    print(format_results(compare(ref, load_runtime(out_dir), images, scale),
                         'integer runtime (float64 sums)'))
    if onnx_path:
        from odm_mm.deploy.onnx_export import ort_session
        fn = onnx_callable(ort_session(onnx_path))
        ref = tensor_fn(onnx_reference) if onnx_reference is not None \
            else ref
        print(format_results(compare(ref, fn, images, scale),
                             f'onnxruntime ({osp.basename(onnx_path)})'))


def main() -> None:
    args = parse_args()
    if not args.onnx and (args.profile != 'body' or args.onnx_form !=
                          'integer' or args.onnx_reduce_range or
                          args.onnx_container_bits):
        raise SystemExit('--profile, --onnx-form, --onnx-reduce-range and '
                         '--onnx-container-bits apply to the ONNX file: add '
                         '--onnx')
    if args.onnx_form == 'integer' and args.onnx_container_bits not in (
            None, 8):
        raise SystemExit('--onnx-container-bits is an option of '
                         '--onnx-form storage (the integer form uses 8-bit '
                         'codes)')
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
    onnx_path, onnx_model = None, None
    if args.onnx:
        from odm_mm.deploy.onnx_export import export_onnx
        onnx_model = generator
        if args.profile == 'deploy':
            from odm_mm.deploy.profile import deploy_profile
            onnx_model = deploy_profile(generator)
        onnx_path = osp.join(args.out, 'model.onnx')
        extra = dict(reduce_range=True) if args.onnx_reduce_range else {}
        info = export_onnx(onnx_model, onnx_path, form=args.onnx_form,
                           container_bits=args.onnx_container_bits, **extra)
        print(f'wrote {onnx_path} ({info.form} form, opset {info.opset}, '
              f'{info.file_bytes} bytes, profile {args.profile})')
        print(f'runs on: {info.runtimes}')
    if args.check:
        check(generator, args.out, _scale(cfg), onnx_path, onnx_model)


def _scale(cfg: Config) -> int:
    """The generator's upscaling factor (PSNR border crop)."""
    gen = cfg.model.get('generator', {})
    for key in ('upscale_factor', 'scale', 'upscale'):
        if key in gen:
            return int(gen[key])
    return int(cfg.get('scale', 4))


if __name__ == '__main__':
    main()
