"""The committed generated modules match proto/, and a plain `pip install .` ships them."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

REPO = Path(__file__).resolve().parents[2]
GENERATED = ["scheduler_pb2.py", "scheduler_pb2.pyi", "scheduler_pb2_grpc.py"]


class PackagingTests(unittest.TestCase):
    """What `make proto` and `pip install .` produce."""

    def setUp(self):
        # absolute: pip runs with this directory as its working directory
        self.tmp_path = Path(self.mktemp()).absolute()
        self.tmp_path.mkdir(parents=True)

    def test_generated_modules_are_current(self):
        from grpc_tools import protoc

        status = protoc.main(
            [
                "protoc",
                f"--proto_path=jobsched/_proto={REPO / 'proto'}",
                f"--python_out={self.tmp_path}",
                f"--pyi_out={self.tmp_path}",
                f"--grpc_python_out={self.tmp_path}",
                str(REPO / "proto" / "scheduler.proto"),
            ]
        )
        self.assertEqual(status, 0)
        for name in GENERATED:
            self.assertTrue(
                filecmp.cmp(
                    self.tmp_path / "jobsched/_proto" / name,
                    REPO / "jobsched/_proto" / name,
                    shallow=False,
                ),
                f"{name} is stale: run `make proto`",
            )

    def test_plain_install_ships_proto_modules_and_plugin(self):
        target = self.tmp_path / "site"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                str(REPO),
            ],
            check=True,
            cwd=self.tmp_path,
            timeout=300,
        )
        self.assertTrue((target / "twisted/plugins/jobsched_plugin.py").exists())
        dashboard = REPO / "jobsched/api/dashboard"
        for name in sorted(path.name for path in dashboard.iterdir()):
            self.assertTrue((target / "jobsched/api/dashboard" / name).exists(), name)
        self.assertFalse((target / "twisted/plugins/__init__.py").exists())
        probe = (
            "import jobsched._proto.scheduler_pb2 as pb, jobsched._proto.scheduler_pb2_grpc as g;"
            "import jobsched; print(jobsched.__file__);"
            "print(pb.DESCRIPTOR.package, g.SchedulerServiceStub.__name__)"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe],
            check=True,
            capture_output=True,
            text=True,
            cwd=self.tmp_path,
            env=dict(os.environ, PYTHONPATH=str(target)),
            timeout=60,
        ).stdout.split("\n")
        self.assertTrue(out[0].startswith(str(target)), out[0])
        self.assertEqual(out[1], "scheduler SchedulerServiceStub")
