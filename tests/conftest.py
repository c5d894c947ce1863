import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tiny demo data for tool tests: a few images, so one epoch is a couple of iterations.
SMALL_DEMO = ['demo_data.num_train=8', 'demo_data.num_val=4', 'demo_data.size=128']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool_env() -> dict:
    env = dict(os.environ)
    # `python` in the shell launchers must be this interpreter (e.g. a venv not activated)
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['PYTHONUNBUFFERED'] = '1'
    env.setdefault('OMP_NUM_THREADS', '2')
    return env


def run_tool(args, cwd, timeout=600, check=True):
    """Run ``args`` (a tools/ script and its arguments) in ``cwd``; return the process."""
    script = str(REPO / args[0])
    cmd = ['bash', script] if script.endswith('.sh') else [sys.executable, script]
    proc = subprocess.run(cmd + [str(a) for a in args[1:]], cwd=cwd, env=tool_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args[0]} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n'
                             f'{proc.stderr[-6000:]}')
    return proc


@pytest.fixture
def repo():
    return REPO
