"""scripts/setup_env.sh --quiet (what `make demo` runs before the demo).

Only the paths that install nothing are run here (a real install takes
minutes and is what `.ci/run` does): a failing install prints one line, then
the reason from its log on stderr; a bad argument is refused.
"""
import os
import os.path as osp
import subprocess

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))
SCRIPT = osp.join(REPO, 'scripts', 'setup_env.sh')


def _run(tmp_path, *args, python='false'):
    env = dict(os.environ, VENV=str(tmp_path / 'venv'), PYTHON_BIN=python)
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)


def test_quiet_failure_prints_one_line_and_the_log_tail(tmp_path):
    r = _run(tmp_path, '--quiet', python=str(tmp_path / 'no-python'))
    assert r.returncode != 0
    out = r.stdout.splitlines()
    assert len(out) == 1 and out[0].startswith('[setup_env] installing into')
    log = tmp_path / 'venv' / 'setup_env.log'
    assert log.is_file() and 'creating' in log.read_text()
    assert '[setup_env] FAILED' in r.stderr
    assert 'no-python' in r.stderr  # the reason, from the log's tail


def test_verbose_failure_is_not_redirected(tmp_path):
    r = _run(tmp_path, python=str(tmp_path / 'no-python'))
    assert r.returncode != 0 and '[setup_env] creating' in r.stdout
    assert not (tmp_path / 'venv' / 'setup_env.log').exists()


def test_unknown_argument_is_refused(tmp_path):
    r = _run(tmp_path, '--loud')
    assert r.returncode == 2 and 'usage:' in r.stderr
    assert not (tmp_path / 'venv').exists()
