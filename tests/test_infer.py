"""tools/infer.py and odm_mm.upscaler: upscale images with a trained model.

On the tiny ODM model of tests/test_test_tool.py (2 training iterations):

* tiling: the tiled output equals the untiled one within 1e-5 (float32,
  other conv shapes) when the overlap covers the receptive field, and
  differs without overlap (so the comparison can fail);
* the tool on one image and on a folder (with ``--gt``): outputs of 4x the
  size, per-image Y-PSNR/SSIM, and a mean Set5 PSNR within 0.05 dB of
  tools/test.py's (the written images are rounded to 8 bit, the test's are
  not);
* a wrong checkpoint stops with one message;
* mmagic's own ``MMagicInferencer`` imports in this environment and runs the
  quantized model, matching ``model.generator`` on the same input.
"""
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import odm_mm

from test_test_tool import run_test_tool, run_tool, trained  # noqa: F401
from tiny_odm import REPO, isolated_runs

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC, reason='needs mmagic')

INFER_PY = REPO / 'tools' / 'infer.py'
#: float32 tolerance of tiled vs untiled outputs (pixel scale [0, 1])
TILE_ATOL = 1e-5


def run_infer(*args) -> int:
    """``tools/infer.py`` in this process; returns its exit status."""
    return run_tool(INFER_PY, *args)


@pytest.fixture(scope='module')
def upscaler(trained):  # noqa: F811
    from mmengine.config import Config

    from odm_mm.upscaler import Upscaler
    config, work_dir, _ = trained
    return Upscaler(Config.fromfile(str(config)), str(work_dir / 'iter_2.pth'),
                    tile=8, overlap=12)


def test_tiled_equals_untiled(upscaler):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(21, 30, 3), dtype=np.uint8)
    x = upscaler.to_input(img)
    whole = upscaler.upscale_tensor(x, tile=0)
    tiled = upscaler.upscale_tensor(x)
    assert tiled.shape == whole.shape == (1, 3, 84, 120)
    assert torch.allclose(tiled, whole, rtol=0, atol=TILE_ATOL)
    upscaler.overlap = 0
    try:  # without context the tile borders differ: the check can fail
        cut = upscaler.upscale_tensor(x)
    finally:
        upscaler.overlap = 12
    assert (cut - whole).abs().max() > 1e-3


def test_image_and_folder_with_metrics(trained, tiny_data_root,  # noqa: F811
                                       tmp_path, capsys):
    config, work_dir, _ = trained
    ckpt = work_dir / 'iter_2.pth'
    lr_dir = tiny_data_root / 'Set5' / 'LR_bicubic' / 'X4'
    one = tmp_path / 'one.png'
    assert run_infer(config, ckpt, lr_dir / 'img0x4.png', one,
                     '--tile', '8', '--overlap', '12') == 0
    lr = cv2.imread(str(lr_dir / 'img0x4.png'))
    sr = cv2.imread(str(one))
    assert sr.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)

    out_dir = tmp_path / 'set5'
    capsys.readouterr()
    assert run_infer(config, ckpt, lr_dir, out_dir, '--gt',
                     tiny_data_root / 'Set5' / 'HR', '--tile', '0') == 0
    out = capsys.readouterr()
    assert sorted(p.name for p in out_dir.iterdir()) == ['img0x4.png',
                                                         'img1x4.png']
    assert np.array_equal(cv2.imread(str(out_dir / 'img0x4.png')), sr)
    text = out.out + out.err
    assert re.search(r'img1x4\.png: PSNR \d+\.\d\d dB, SSIM 0\.\d{4}', text)
    mean = float(re.search(r'Y-PSNR (\d+\.\d+) dB', text).group(1))

    metrics = tmp_path / 'm.json'
    assert run_test_tool(config, ckpt, tiny_data_root, '--work-dir',
                         str(tmp_path / 'test'), '--out', str(metrics)) == 0
    assert abs(json.loads(metrics.read_text())['Set5/PSNR'] - mean) < 0.05


def test_wrong_checkpoint_one_message(trained, tiny_data_root,  # noqa: F811
                                      tmp_path, capsys):
    config, _, fp32 = trained
    lr = tiny_data_root / 'Set5' / 'LR_bicubic' / 'X4' / 'img0x4.png'
    bare = tmp_path / 'bare.pth'
    state = torch.load(fp32, weights_only=True)['state_dict']
    torch.save({k[len('generator.'):]: v for k, v in state.items()}, bare)
    assert run_infer(config, bare, lr, tmp_path / 'o.png') == 1
    err = capsys.readouterr().err
    assert 'FP32 EDSRNet state dict' in err and 'Traceback' not in err
    assert not (tmp_path / 'o.png').exists()


def test_mmagic_inferencer_runs_the_quantized_model(trained,  # noqa: F811
                                                    tiny_data_root,
                                                    tmp_path):
    from mmagic.apis import MMagicInferencer
    config, work_dir, _ = trained
    lr_path = tiny_data_root / 'Set5' / 'LR_bicubic' / 'X4' / 'img0x4.png'
    with isolated_runs():
        inferencer = MMagicInferencer(
            'esrgan', model_config=str(config),
            model_ckpt=str(work_dir / 'iter_2.pth'), device='cpu')
        result = inferencer.infer(img=str(lr_path),
                                  result_out_dir=str(tmp_path / 'sr.png'))
    model = inferencer.inferencer.inferencer.model
    assert type(model).__name__ == 'ODMEditModel'
    lr = cv2.cvtColor(cv2.imread(str(lr_path)), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.
    with torch.no_grad():
        ref = (model.generator(x)[0] * 255.).clamp(0, 255)
    pred, image = result  # ({'infer_results': data sample}, BGR image)
    pred = pred['infer_results'].output.pred_img.float().clamp(0, 255)
    ref = ref.flip(0)  # mmagic's output data sample is BGR
    assert pred.shape == ref.shape
    assert torch.allclose(pred, ref, rtol=0, atol=1e-3)
    saved = cv2.imread(str(tmp_path / 'sr.png'))
    assert np.array_equal(saved, image)  # BGR, 8 bit


def test_artifact_and_onnx_models(trained, upscaler, tmp_path):  # noqa: F811
    """A deployment artifact folder and an .onnx file as MODEL give the
    checkpoint's output (integer runtime: float rounding; onnxruntime: the
    integer ONNX form, whose bounds tests/test_onnx_integer.py derives:
    8-bit requantised conv outputs, code flips, border nudges), tiled."""
    from mmengine.config import Config

    from odm_mm.deploy import export_artifact
    from odm_mm.deploy.onnx_export import export_onnx
    from odm_mm.upscaler import Upscaler
    config, _, _ = trained
    cfg = Config.fromfile(str(config))
    export_artifact(upscaler.net, str(tmp_path / 'art'),
                    cfg.model.generator.to_dict())
    export_onnx(upscaler.net, str(tmp_path / 'm.onnx'))
    rng = np.random.default_rng(1)
    x = upscaler.to_input(rng.integers(0, 256, (20, 17, 3), dtype=np.uint8))
    ref = upscaler.upscale_tensor(x, tile=0)
    for model, atol in ((tmp_path / 'art', 1e-5), (tmp_path / 'm.onnx',
                                                    1e-2)):
        other = Upscaler(cfg, str(model), tile=8, overlap=12)
        assert other.kind == ('artifact' if model.suffix == '' else 'onnx')
        out = other.upscale_tensor(x)
        assert torch.allclose(out.float(), ref, rtol=0, atol=atol), \
            (model, (out - ref).abs().max())
