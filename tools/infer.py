"""Upscale an image or a folder of images with a trained model.

    python tools/infer.py CONFIG MODEL INPUT OUTPUT [--gt GT_DIR]
        [--tile 128] [--overlap 40] [--non-strict] [--cfg-options ...]

* MODEL: a training checkpoint (``.pth``, loaded strictly into CONFIG's
  model; the FP32 teacher file is not needed), a deployment artifact folder
  or an ``.onnx`` file (``tools/deploy/export.py [--onnx]``);
* INPUT: an image, or a folder (its images, one progress bar); OUTPUT: the
  image to write, or the folder (created; same file names);
* large images run tile by tile (``--tile`` LR pixels, ``--overlap`` LR
  pixels of context; ``--tile 0``: whole images) so memory stays bounded;
  with the overlap at least the receptive-field radius the result equals
  the untiled one (docs/inference.md);
* ``--gt DIR``: Y-PSNR/SSIM of each output against the ground truth of the
  same name (``babyx4.png`` -> ``baby.png`` too), mmagic's functions with
  the package's convention (Y channel, ``crop_border`` = scale, HR cropped
  to ``LR * scale``), on the written 8-bit images; and their mean.

Examples::

    python tools/infer.py configs/odm/local/edsr_x4_w2a2_t91.py \\
        work_dirs/odm_edsr_x4_w2a2_t91/iter_2000.pth \\
        ../shared/data/Set5/LR_bicubic/X4 out/set5 --gt ../shared/data/Set5/HR
    python tools/infer.py CONFIG artifact_dir/model.onnx photo.png photo_x4.png
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from odm_quiet import quiet_third_party  # noqa: E402

quiet_third_party()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

import odm_mm  # noqa: E402,F401  (registers odm_mm into mmagic)
from odm_mm.data_root import merge_cfg_options  # noqa: E402
from odm_mm.upscaler import Upscaler  # noqa: E402

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line of the tool."""
    p = argparse.ArgumentParser(
        description='Upscale an image or a folder with a trained model')
    p.add_argument('config', help='the model\'s config')
    p.add_argument('model', help='checkpoint (.pth), deployment artifact '
                   'folder or .onnx file')
    p.add_argument('input', help='an image or a folder of images')
    p.add_argument('output', help='the output image, or folder for a folder')
    p.add_argument('--gt', help='folder of ground-truth HR images: print '
                   'Y-PSNR/SSIM')
    p.add_argument('--tile', type=int, default=128,
                   help='LR tile size in pixels (0: whole images)')
    p.add_argument('--overlap', type=int, default=40,
                   help='LR pixels of context around each tile')
    p.add_argument('--non-strict', action='store_true',
                   help='load a checkpoint that does not fit the model')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value')
    return p.parse_args(argv)


def list_jobs(inp: str, out: str) -> List[Tuple[str, str]]:
    """``[(input image, output image)]``; one message for a bad INPUT."""
    if osp.isdir(inp):
        names = sorted(f for f in os.listdir(inp)
                       if f.lower().endswith(IMAGE_EXTS))
        if not names:
            raise SystemExit(f'input folder {inp} holds no images '
                             f'({", ".join(IMAGE_EXTS)})')
        if osp.isfile(out):
            raise SystemExit(f'output {out} is a file; for the input folder '
                             'give a folder')
        return [(osp.join(inp, n), osp.join(out, n)) for n in names]
    if not osp.isfile(inp):
        raise SystemExit(f'input {inp}: no such image or folder')
    if osp.isdir(out):
        out = osp.join(out, osp.basename(inp))
    return [(inp, out)]


def read_rgb(path: str) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB; one message if unreadable."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f'{path}: not a readable image')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def find_gt(gt_dir: str, name: str, scale: int) -> Optional[str]:
    """The ground truth of ``name`` in ``gt_dir`` (``<stem>x<scale>`` ->
    ``<stem>``), any image extension."""
    stem = osp.splitext(name)[0]
    stems = [stem, re.sub(rf'x{scale}$', '', stem)]
    for s in stems:
        for ext in IMAGE_EXTS:
            path = osp.join(gt_dir, s + ext)
            if osp.isfile(path):
                return path
    return None


def y_metrics(sr: np.ndarray, gt: np.ndarray,
              scale: int) -> Dict[str, float]:
    """Y-PSNR/SSIM as the package evaluates (mmagic, crop = scale)."""
    from mmagic.evaluation.metrics.psnr import psnr
    from mmagic.evaluation.metrics.ssim import ssim
    gt = gt[:sr.shape[0], :sr.shape[1]]
    if gt.shape != sr.shape:
        raise SystemExit(f'ground truth is {gt.shape[:2]} (HxW), smaller '
                         f'than the output {sr.shape[:2]}')
    kw = dict(crop_border=scale, input_order='HWC', convert_to='Y')
    a, b = gt.astype(np.float64), sr.astype(np.float64)
    return dict(psnr=float(psnr(a, b, **kw)), ssim=float(ssim(a, b, **kw)))


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    """Run the tool; returns ``{image name: {'psnr', 'ssim'}}`` (with
    ``--gt``)."""
    from tqdm import tqdm
    args = parse_args(argv)
    jobs = list_jobs(args.input, args.output)
    if args.gt and not osp.isdir(args.gt):
        raise SystemExit(f'--gt {args.gt}: no such folder')
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)
    try:
        upscaler = Upscaler(cfg, args.model, tile=args.tile,
                            overlap=args.overlap, strict=not args.non_strict)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    metrics: Dict[str, Dict[str, float]] = {}
    for src, dst in tqdm(jobs, desc='upscaling', unit='img',
                         disable=len(jobs) < 2):
        lr = read_rgb(src)
        sr = upscaler(lr)
        os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
        if not cv2.imwrite(dst, cv2.cvtColor(sr, cv2.COLOR_RGB2BGR)):
            raise SystemExit(f'cannot write {dst}')
        if args.gt:
            scale = sr.shape[0] // lr.shape[0]
            gt_path = find_gt(args.gt, osp.basename(src), scale)
            if gt_path is None:
                tqdm.write(f'{osp.basename(src)}: no ground truth in '
                           f'{args.gt}')
                continue
            metrics[osp.basename(src)] = m = y_metrics(sr, read_rgb(gt_path),
                                                       scale)
            tqdm.write(f'{osp.basename(src)}: PSNR {m["psnr"]:.2f} dB, '
                       f'SSIM {m["ssim"]:.4f}')
    where = args.output if len(jobs) > 1 else jobs[0][1]
    print(f'wrote {len(jobs)} image(s) to {where}')
    if metrics:
        mean_p = np.mean([m['psnr'] for m in metrics.values()])
        mean_s = np.mean([m['ssim'] for m in metrics.values()])
        print(f'mean over {len(metrics)} image(s): Y-PSNR {mean_p:.2f} dB, '
              f'SSIM {mean_s:.4f} (border {scale} px cropped)')
    return metrics


if __name__ == '__main__':
    main()
