# The ONE place where configs learn where the SR images live.
#
# $ODM_DATA_ROOT if set, else <repo>/../shared/data (the same default as
# odm_mm.data_root.default_data_root()). Every dataset path in
# configs/_base_/datasets/*.py is built from `odm_data_root`; tools/train.py
# and tools/test.py move all of them with `--cfg-options odm_data_root=DIR`.
# Layout expected below the root: see docs/data.md.
#
# Only `import sys` here: mmengine 0.10 treats a config importing any module
# it does not recognise as builtin as a "lazy import" config, and on Python
# 3.11 it does not recognise `os` (a frozen module). os is always loaded.
import sys

_os = sys.modules['os']
odm_data_root = _os.path.abspath(
    _os.path.expanduser(
        _os.environ.get('ODM_DATA_ROOT') or _os.path.join(
            '{{ fileDirname }}', '..', '..', '..', '..', 'shared', 'data')))

# FP32 teachers shipped beside the repo: $ODM_MODELS_ROOT if set, else
# <repo>/../shared/models (odm_mm.data_root.get_models_root()).
odm_models_root = _os.path.abspath(
    _os.path.expanduser(
        _os.environ.get('ODM_MODELS_ROOT') or _os.path.join(
            '{{ fileDirname }}', '..', '..', '..', '..', 'shared', 'models')))
