"""Deployment benchmark: latency, memory, size and PSNR of deployed models.

Builds, from an FP32 EDSR teacher (default: the shared EDSR-baseline x4),
post-training-calibrated ODM and PAMS models at each bit-width, exports them
and measures, interleaved in one run:

* ``fp32-torch`` / ``fp32-ort``: the teacher in PyTorch and in onnxruntime
  (``torch.onnx.export``);
* ``fakequant-torch``: the QAT model as trained (QuantConv, float math);
* ``int-runtime``: the integer reference runtime (odm_mm.deploy.runtime,
  exact integer sums in float64: a correctness reference, not fast);
* ``<method>-w<b>a<b>-body``: the integer ONNX form of the model as
  trained (body convs integer, head/upsampler/tail FP32);
* ``<method>-w<b>a<b>-deploy``: the integer ONNX form of the deploy profile
  (head/upsampler/tail at W8A8 too, :mod:`odm_mm.deploy.profile`).

Latency is per output frame (LR = output / 4) at each ``--sizes`` and
``--threads``; every measurement runs in a fresh worker process (its own
peak RSS, no warm cache shared between models), one frame after one warm-up
frame, rounds interleaved over models (median of ``--reps`` rounds). PSNR is
Y-PSNR (crop 4) on Set5 and Set14 of the deployed model, next to its
fake-quant model. The fake-quant and runtime models do not depend on the
bit-width for speed: they are timed for the first ``--methods`` /
``--bits`` pair only, the runtime at ``--runtime-size`` (320x180) with the
most threads.

Usage::

    python tools/deploy/bench.py --out docs/deploy_bench.json
    python tools/deploy/bench.py --sizes 1280x720 --threads 2 --reps 3
    # build and score now, time later (same --workdir)
    python tools/deploy/bench.py --workdir /tmp/bench --no-timing
    python tools/deploy/bench.py --workdir /tmp/bench --out docs/deploy_bench.json
"""
import argparse
import copy
import glob
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCALE = 4
#: The shared teacher's generator config (mmagic EDSRNet, EDSR-baseline).
TEACHER_CFG = dict(type='EDSRNet', in_channels=3, out_channels=3,
                   mid_channels=64, num_blocks=16, upscale_factor=SCALE,
                   rgb_mean=[0.4488, 0.4371, 0.4040], rgb_std=[1.0, 1.0, 1.0])


# ------------------------------------------------------------------ worker
def _worker(spec: dict) -> dict:
    """Time one model at every (size, threads); returns seconds and RSS."""
    kind, path = spec['kind'], spec['path']
    out = {}
    for threads in spec['threads']:
        torch.set_num_threads(threads)
        if kind == 'ort':
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(path, opts,
                                        providers=['CPUExecutionProvider'])
            name = sess.get_inputs()[0].name

            def run(x, sess=sess, name=name):
                sess.run(None, {name: x.numpy()})
        else:
            if kind == 'runtime':
                from odm_mm.deploy.runtime import load_runtime
                model = load_runtime(path)
            else:
                import odm_mm  # noqa: F401  (unpickles QuantConv)
                model = torch.load(path, weights_only=False).eval()

            def run(x, model=model):
                with torch.no_grad():
                    model(x)
        for size in spec['sizes']:
            w, h = (int(v) for v in size.split('x'))
            x = torch.rand(1, 3, h // SCALE, w // SCALE,
                           generator=torch.Generator().manual_seed(0))
            run(x)  # warm-up (allocations, kernel selection)
            t0 = time.perf_counter()
            run(x)
            out[f'{size}@{threads}'] = time.perf_counter() - t0
    out['rss_mb'] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: reset by exec, unlike
    ``ru_maxrss``, which a child keeps from its parent across exec)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ build
def _load_teacher(path: str):
    from mmagic.models.editors.edsr.edsr_net import EDSRNet
    if not osp.isfile(path):
        raise SystemExit(
            f'FP32 teacher {path} not found: pass --teacher with an mmagic '
            'EDSRNet x4 state dict (64 ch, 16 blocks), e.g. the shared '
            '../shared/models/edsr_x4c64b16_t91_fp32.pth')
    net = EDSRNet(**{k: v for k, v in TEACHER_CFG.items() if k != 'type'})
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    net.load_state_dict(ckpt.get('state_dict', ckpt), strict=True)
    return net.eval()


def _calib_patches(root: str, n: int = 16, size: int = 48):
    """LR patches of T91 (area x4), or scikit-image photographs."""
    import cv2

    from odm_mm.deploy.calib import default_calibration_inputs, lr_hr_pair
    files = sorted(glob.glob(osp.join(root, 'T91', '*.png')))[:n]
    if not files:
        return default_calibration_inputs()
    return [lr_hr_pair(cv2.imread(f)[..., ::-1], SCALE)[0][..., :size, :size]
            for f in files]


def _test_sets(root: str):
    """``{'Set5': [CheckImage], 'Set14': [...]}`` (empty without data)."""
    from odm_mm.deploy.check import test_set_images
    sets = {name: test_set_images(root, name, SCALE)
            for name in ('Set5', 'Set14')}
    return {name: imgs for name, imgs in sets.items() if imgs}


@torch.no_grad()
def _outputs(fn, sets) -> dict:
    return {name: [fn(im.lr).float() for im in imgs]
            for name, imgs in sets.items()}


def _psnr(outs, sets) -> dict:
    from odm_mm.deploy.check import y_psnr
    return {name: statistics.fmean(y_psnr(o, im.hr, SCALE)
                                   for o, im in zip(outs[name], imgs))
            for name, imgs in sets.items()}


def _max_diff(outs, ref) -> float:
    return max(float((a - b).abs().max()) for name in outs
               for a, b in zip(outs[name], ref[name]))


def _ort_fn(path):
    from odm_mm.deploy.check import onnx_callable
    from odm_mm.deploy.onnx_export import ort_session
    return onnx_callable(ort_session(path))


def build(args, tmp: str) -> tuple:
    """Export every model; returns (specs, info rows)."""
    from odm_mm.calibration import calibrate_model
    from odm_mm.deploy.export import export_artifact
    from odm_mm.deploy.onnx_export import export_onnx
    from odm_mm.deploy.profile import deploy_profile
    from odm_mm.swap import swap_convs
    teacher = _load_teacher(args.teacher)
    calib = _calib_patches(args.data_root)
    sets = _test_sets(args.data_root)
    specs, rows = {}, {}

    def add(name, kind, path, fn, ref=None):
        """Score ``fn`` on the test sets (vs the fake-quant outputs
        ``ref``) and keep the model for timing."""
        outs = _outputs(fn, sets)
        row = dict(kind=kind, file_bytes=os.path.getsize(path)
                   if osp.isfile(path) else _dir_bytes(path),
                   psnr=_psnr(outs, sets))
        if ref is not None and sets:
            row.update(fakequant_psnr=_psnr(ref, sets),
                       max_diff_vs_fakequant=_max_diff(outs, ref))
        rows[name] = row
        specs[name] = dict(kind=kind, path=path)
        print(f'[bench] built {name}: PSNR ' + ', '.join(
            f'{k} {v:.3f}' for k, v in row['psnr'].items()) + (
            f', max |diff| vs fake-quant {row["max_diff_vs_fakequant"]:.3g}'
            if 'max_diff_vs_fakequant' in row else ''), flush=True)
        return outs

    path = osp.join(tmp, 'fp32.pt')
    torch.save(teacher, path)
    add('fp32-torch', 'torch', path, teacher)
    path = osp.join(tmp, 'fp32.onnx')
    torch.onnx.export(teacher, (torch.rand(1, 3, 16, 16), ), path,
                      input_names=['input'], output_names=['output'],
                      dynamic_axes={'input': {0: 'n', 2: 'h', 3: 'w'}},
                      opset_version=17, dynamo=False)
    add('fp32-ort', 'ort', path, _ort_fn(path))
    first = True
    for method in args.methods:
        for bits in args.bits:
            tag = f'{method}-w{bits}a{bits}'
            gen = copy.deepcopy(teacher)
            swap_convs(gen, w_bits=bits, a_bits=bits, method=method)
            calibrate_model(gen, calib, shift=method == 'odm',
                            scale=method == 'odm')
            gen.eval()
            path = osp.join(tmp, f'{tag}.pt')
            torch.save(gen, path)
            if first:
                fq = add(f'fakequant-torch ({tag})', 'torch', path, gen)
                path = osp.join(tmp, f'{tag}-artifact')
                export_artifact(gen, path, TEACHER_CFG)
                add(f'int-runtime ({tag})', 'runtime', path,
                    _runtime_fn(path), fq)
                first = False
            else:  # scored, not timed (same speed as the first one)
                fq = _outputs(gen, sets)
            path = osp.join(tmp, f'{tag}-body.onnx')
            export_onnx(gen, path, calib=calib)
            add(f'{tag}-body', 'ort', path, _ort_fn(path), fq)
            prof = deploy_profile(gen, calib)
            path = osp.join(tmp, f'{tag}-deploy.onnx')
            export_onnx(prof, path, calib=calib)
            fq_prof = _outputs(prof, sets)
            add(f'{tag}-deploy', 'ort', path, _ort_fn(path), fq_prof)
            rows[f'{tag}-deploy']['trained_fakequant_psnr'] = _psnr(fq, sets)
    return specs, rows


def _runtime_fn(path):
    from odm_mm.deploy.runtime import load_runtime
    return load_runtime(path)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(osp.join(r, f))
               for r, _, fs in os.walk(path) for f in fs)


# ------------------------------------------------------------------ timing
def measure(args, specs: dict) -> dict:
    """Interleaved rounds of fresh worker processes; medians."""
    names = list(specs)
    per = {n: [] for n in names}
    t_start, done, total = time.time(), 0, args.reps * len(names)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            spec = dict(specs[name], sizes=args.sizes, threads=args.threads)
            if spec['kind'] == 'runtime':  # slow reference: one setting
                spec.update(sizes=[args.runtime_size],
                            threads=[max(args.threads)])
            res = subprocess.run(
                [sys.executable, __file__, '--worker', json.dumps(spec)],
                capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f'worker for {name} failed:\n'
                                 f'{res.stderr[-2000:]}')
            per[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            done += 1
            eta = (time.time() - t_start) / done * (total - done)
            print(f'[bench] round {rep + 1}/{args.reps} {name}: ' + ', '.join(
                f'{k} {v:.3f}s' for k, v in per[name][-1].items()
                if k != 'rss_mb') + f' (ETA {eta / 60:.1f} min)', flush=True)
    out = {}
    for name, runs in per.items():
        keys = [k for k in runs[0] if k != 'rss_mb']
        out[name] = dict(
            seconds={k: statistics.median(r[k] for r in runs) for k in keys},
            rss_mb=max(r['rss_mb'] for r in runs), runs=len(runs))
    return out


def _build_or_reuse(args, folder: str) -> tuple:
    """Models of a previous run in ``folder`` (same build options), or
    build them there."""
    os.makedirs(folder, exist_ok=True)
    record = osp.join(folder, 'build.json')
    key = dict(teacher=args.teacher, data_root=args.data_root,
               methods=args.methods, bits=args.bits)
    if osp.isfile(record):
        with open(record) as f:
            saved = json.load(f)
        if saved['key'] == key and all(osp.exists(s['path'])
                                       for s in saved['specs'].values()):
            print(f'[bench] reusing the models built in {folder}')
            return saved['specs'], saved['rows']
    specs, rows = build(args, folder)
    with open(record, 'w') as f:
        json.dump(dict(key=key, specs=specs, rows=rows), f, indent=1)
    return specs, rows


def table(rows: dict, timing: dict, args) -> str:
    """Markdown table (speedups against fp32-ort at the same setting)."""
    cols = [f'{s}@{t}' for s in args.sizes for t in args.threads]
    extra = sorted({c for t in timing.values() for c in t['seconds']} -
                   set(cols))
    cols += extra
    head = ['model', 'file MB'] + [f'{c} s (x FP32-ORT)' for c in cols] + [
        'peak RSS MB'] + [f'{s} PSNR (fake-quant)' for s in ('Set5', 'Set14')
                          ] + ['max abs diff']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    base = timing.get('fp32-ort', {}).get('seconds', {})
    for name, row in rows.items():
        t = timing.get(name, {})
        cells = [name, f'{row["file_bytes"] / 1e6:.2f}']
        for c in cols:
            sec = t.get('seconds', {}).get(c)
            cells.append('–' if sec is None else
                         f'{sec:.3f} ({base[c] / sec:.2f}x)' if c in base
                         else f'{sec:.3f}')
        cells.append(f'{t["rss_mb"]:.0f}' if t else '–')
        for s in ('Set5', 'Set14'):
            p = row['psnr'].get(s)
            fq = (row.get('fakequant_psnr') or {}).get(s)
            cells.append('–' if p is None else f'{p:.3f}' + (
                '' if fq is None else f' ({fq:.3f})'))
        md = row.get('max_diff_vs_fakequant')
        cells.append('–' if md is None else f'{md:.3g}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args() -> argparse.Namespace:
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    shared = osp.normpath(osp.join(root, '..', 'shared'))
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--teacher', default=osp.join(
        shared, 'models', 'edsr_x4c64b16_t91_fp32.pth'))
    p.add_argument('--data-root', default=os.environ.get('ODM_DATA_ROOT')
                   or osp.join(shared, 'data'))
    p.add_argument('--methods', nargs='+', default=['odm', 'pams'])
    p.add_argument('--bits', nargs='+', type=int, default=[8, 4, 2])
    p.add_argument('--sizes', nargs='+', default=['1280x720', '1920x1080'])
    p.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--runtime-size', default='320x180',
                   help='output size at which the (slow, float64) integer '
                   'reference runtime is timed')
    p.add_argument('--out', help='JSON file for the results')
    p.add_argument('--no-timing', action='store_true',
                   help='build and score only')
    p.add_argument('--workdir', help='keep the built models here; a later '
                   'run with the same --workdir reuses them (build.json) '
                   'and only times: build on a busy machine, time on a '
                   'quiet one')
    return p.parse_args()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == '--worker':
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        return
    args = parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        specs, rows = _build_or_reuse(args, args.workdir or tmp)
        timing = {} if args.no_timing else measure(args, specs)
    text = table(rows, timing, args)
    print(text)
    load = os.getloadavg()
    print(f'[bench] {time.time() - t0:.0f} s; load average at the end '
          f'{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()}'
          ' CPUs')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(args=vars(args), models=rows, timing=timing,
                           table=text, loadavg=load), f, indent=1)


if __name__ == '__main__':
    main()
