"""First render of the dashboard over a large job table, in headless Chromium.

A 3-node cluster starts from a table of `--jobs` finished jobs (a seeded Raft snapshot
in each node's --data-dir, tests/e2e/seeded_table.py); the page is loaded `--runs`
times from a follower in one browser. The figure is the page's own User Timing mark
`jobsched:jobs-rendered` (milliseconds from navigation start to the first page of jobs
in the table); the first load is with a fresh browser profile (cold), the others
revalidate the page's files (warm).

    .venv/bin/python -m bench.dashboard_render                  # 10,000 jobs, 5 loads
    .venv/bin/python -m bench.dashboard_render --jobs 50000 --runs 3

Prints figures; asserts nothing. Needs chromium and chromium-driver
(`python tests/browser.py install`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task

from bench.common import machine_note, stop_nodes
from tests.browser import Browser, unavailable_reason
from tests.e2e.seeded_table import finished_jobs, write_data_dirs
from tests.nodeproc import Cluster, NodeFactory, wait_until

RENDERED = "return performance.getEntriesByName('jobsched:jobs-rendered').map(e => e.startTime)"


def render_time(browser: Browser, url: str) -> float:
    """Load `url` and return the jobs-rendered mark, in ms."""
    browser.driver.get(url)
    marks = wait_until(lambda: browser.driver.execute_script(RENDERED), 60, "the jobs rendered")
    return marks[0]


async def main(reactor, jobs: int, runs: int) -> None:
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"no browser: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="jobsched-bench-dashboard-"))
    started = time.monotonic()
    snapshot, index = finished_jobs(jobs)
    await write_data_dirs(workdir, (1, 2, 3), snapshot, index, reactor)
    print(
        f"seeded {jobs:,} finished jobs ({len(snapshot) / 2**20:.1f} MiB snapshot) "
        f"in {time.monotonic() - started:.1f} s"
    )
    factory = NodeFactory(workdir)
    browser = None
    try:
        cluster = Cluster(factory, 3, "--data-dir", f"{workdir}/node{{node_id}}")
        for node in cluster.nodes.values():
            node.wait_ready(timeout=60)
        leader = cluster.leader(timeout=30)
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        browser = Browser()
        url = follower.url + "/"
        times = [render_time(browser, url) for _ in range(runs)]
        print(machine_note())
        print(f"first render of {jobs:,} jobs (page of 50, from a follower):")
        print(f"  cold (fresh profile): {times[0]:.0f} ms")
        if len(times) > 1:
            warm = times[1:]
            print(
                f"  warm: median {statistics.median(warm):.0f} ms, max {max(warm):.0f} ms "
                f"over {len(warm)} loads"
            )
    finally:
        if browser is not None:
            browser.quit()
        stop_nodes(factory.nodes)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments.jobs, arguments.runs)))
