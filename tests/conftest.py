"""pytest runs the trial suite from a scratch directory of its own, as trial does
(`_trial_temp`), so that `TestCase.mktemp()` writes there, never into the source tree,
and two runs at once never share one."""

import os
import shutil
import tempfile

_scratch = []


def pytest_configure(config):
    _scratch.append(tempfile.mkdtemp(prefix="jobsched-tests-"))
    os.chdir(_scratch[0])


def pytest_unconfigure(config):
    for path in _scratch:
        shutil.rmtree(path, ignore_errors=True)
