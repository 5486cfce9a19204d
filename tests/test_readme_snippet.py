"""The README's "Use it on your mmagic config" snippet runs as written.

The first ``python`` block of that README section is written to a file with
only the FP32 teacher replaced (a tiny EDSR saved here instead of mmagic's
download) and trained for 2 iterations by ``tools/train.py`` on the tiny
data root (``--cfg-options odm_data_root=``, as the README says), shrunk on
the command line to the tiny teacher's size. It must train, validate,
save the best checkpoint by the stock ``save_best='PSNR'`` (mapped to
``Set5/PSNR``) and log what the fragment replaced.
"""
import re
from pathlib import Path

import pytest

import odm_mm

from tiny_odm import REPO, train, write_fp32_checkpoint

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC, reason='needs mmagic')

SECTION = '## Use it on your mmagic config'
TEACHER_URL = re.compile(r"fp32_checkpoint='(https://[^']+)'")


def readme_snippet() -> str:
    """The first python block of the README's section."""
    text = (REPO / 'README.md').read_text()
    assert SECTION in text, 'README lost its "Use it on your config" section'
    section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
    blocks = re.findall(r'```python\n(.*?)```', section, re.S)
    assert blocks, 'no python block in the section'
    return blocks[0]


def test_snippet_names_nothing_to_fill_in():
    code = readme_snippet()
    assert '<' not in code and '...' not in code  # no placeholders
    assert TEACHER_URL.search(code), 'the teacher should be a full URL'
    assert "'odm_mm::odm/_base_/odm.py'" in code


def test_readme_snippet_trains(tmp_path, tiny_data_root, monkeypatch):
    code = readme_snippet()
    teacher = write_fp32_checkpoint(tmp_path / 'teacher.pth')
    url = TEACHER_URL.search(code).group(1)
    config = tmp_path / 'my_edsr_w2a2.py'
    config.write_text(code.replace(url, str(teacher)))
    work_dir = tmp_path / 'work'
    import odm_mm.fragment
    said = []
    monkeypatch.setattr(odm_mm.fragment, 'print_log',
                        lambda msg, **kw: said.append(msg))
    train(config, work_dir, tiny_data_root, options=[
        'model.generator.mid_channels=8', 'model.generator.num_blocks=2',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1',
        'custom_hooks.1.num_batches=1'])
    # the stock config's CheckpointHook saves to ./work_dirs/<work dir name>
    assert list(tmp_path.rglob('iter_2.pth'))
    assert list(tmp_path.rglob('best_Set5_PSNR_iter_2.pth'))
    text = '\n'.join(said)
    assert "save_best: 'PSNR' -> 'Set5/PSNR'" in text
    assert '[odm_mm fragment] model: the stock BaseEditModel' in text
    assert '[odm_mm fragment] optim_wrapper: the stock OptimWrapper(Adam' \
        in text
    text = ''.join(p.read_text() for p in work_dir.glob('*/*.log'))
    assert 'Iter(train) [2/2]' in text
    # mmengine's per-parameter lines are at debug level
    assert 'is skipped since its requires_grad=False' not in text
    assert 'paramwise_options -- ' not in text
