"""How fast jobs start and finish: submit→completed on an idle cluster, and how fast a
queue of jobs drains, against what this machine can do without jobsched.

    .venv/bin/python -m bench.job_latency                     # process executor
    .venv/bin/python -m bench.job_latency --executor docker   # needs a Docker engine
    .venv/bin/python -m bench.job_latency --worker-slots 8    # the drain with larger batches
    .venv/bin/python -m bench.job_latency --queue 2000 --py-spy DIR   # profile the drains

process executor:
  latency   one `true` job at a time on an idle 3-node cluster: SubmitJob sent → the
            client learns it completed, --jobs times, two ways: pushed (the final
            chunk of StreamJobOutput with follow, as `job logs -f` waits) and polled
            (GetJobStatus every millisecond: a load of its own on the leader, which
            slows the node running the job when that is the leader)
  drain     --queue `true` jobs submitted at once (SubmitJobs), time until the last
            is completed; against one process spawning and reaping `sh -c true` in a
            loop (the same count, half just before the drain and half just after, so
            that both meet the same minutes of a machine whose speed drifts; the
            two halves' rates are printed too). Both print the CPU they
            cost per job, their own and their jobs', and the cores they kept busy:
            with two cores, what the nodes may spend per job at a given rate
docker executor:
  latency   `echo hi` in --image: submit → completed (pushed, then polled), against
            a bare `docker run --rm` of the same image (and the executor's flags)

Every figure carries the load average. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass

import grpc

from bench.common import (
    cpu_seconds,
    machine_note,
    percentile,
    running_cluster,
    start_profilers,
    stop_profilers,
    this_process_cpu_seconds,
)
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc

POLL_DRAIN_SECONDS = 0.25
POLL_SECONDS = 0.001
DOCKER_FLAGS = [
    "--network",
    "none",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=16m,mode=1777",
    "--user",
    "65534:65534",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--pids-limit",
    "128",
    "-m",
    "256m",
    "--cpus",
    "0.5",
]


def _polled_until_finished(stub, job_id: str) -> int:
    """The job's final status, asking GetJobStatus every POLL_SECONDS."""
    request = pb.GetJobStatusRequest(job_id=job_id)
    deadline = time.monotonic() + 60
    while True:
        status = stub.GetJobStatus(request, timeout=10).status
        if status in (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished in time: {status}")
        time.sleep(POLL_SECONDS)


def _pushed_when_finished(stub, job_id: str) -> int:
    """The job's final status as the node pushes it: the last chunk of its followed
    output (what `jobsched job logs -f` waits for) carries it."""
    request = pb.StreamJobOutputRequest(job_id=job_id, follow=True)
    for chunk in stub.StreamJobOutput(request, timeout=60):
        if chunk.final:
            return chunk.status
    raise AssertionError(f"the output stream of job {job_id} ended without a final chunk")


WATCHERS = {"pushed": _pushed_when_finished, "polled": _polled_until_finished}


def submit_to_completed(
    stub, command: str, count: int, image: str = "", watch: str = "pushed"
) -> list[float]:
    """Seconds from sending SubmitJob to learning the job completed, one job at a time."""
    finished = WATCHERS[watch]
    times = []
    for _ in range(count):
        request = pb.SubmitJobRequest(command=command)
        if image:
            request.image = image
        started = time.perf_counter()
        job_id = stub.SubmitJob(request, timeout=10).job_id
        status = finished(stub, job_id)
        times.append(time.perf_counter() - started)
        if status != pb.JOB_STATUS_COMPLETED:
            raise AssertionError(f"job {job_id} did not complete: {status}")
    return sorted(times)


def drain_seconds(stub, count: int) -> float:
    """Seconds from submitting `count` `true` jobs at once until the last one finished.

    The end is the latest `completed_at_ms` of the jobs, so the bench polls only every
    POLL_DRAIN_SECONDS, and asks only what the leader's status indexes answer at once
    (how many jobs are pending, how many running): a filtered count would scan every
    finished job on the leader, a load of its own on the node the drain depends on.
    Every other job on the cluster must be finished before."""
    started_ms = time.time() * 1000
    jobs = [pb.SubmitJobRequest(command="true")] * min(count, 1000)
    for first in range(0, count, 1000):
        stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs[: min(1000, count - first)]), timeout=30)
    deadline = time.monotonic() + 300
    while _unfinished(stub):
        if time.monotonic() > deadline:
            raise AssertionError("the queue did not drain in 300 s")
        time.sleep(POLL_DRAIN_SECONDS)
    query = pb.ListJobsRequest(
        status_filter=pb.JOB_STATUS_COMPLETED, created_after_ms=int(started_ms) - 1
    )
    return (_last_finished_ms(stub, query, count) - started_ms) / 1000


def _unfinished(stub) -> int:
    """Jobs pending or running on the cluster."""
    return sum(
        stub.ListJobs(pb.ListJobsRequest(page_size=1, status_filter=status), timeout=10).total_count
        for status in (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING)
    )


def _last_finished_ms(stub, query, count: int) -> int:
    """The latest `completed_at_ms` of the jobs `query` lists, which must be `count`."""
    page = pb.ListJobsRequest()
    page.CopyFrom(query)
    page.page_size = 1000
    last = 0
    while True:
        answer = stub.ListJobs(page, timeout=10)
        if answer.total_count != count:
            raise AssertionError(f"{answer.total_count} of {count} jobs completed")
        last = max([last, *(job.completed_at_ms for job in answer.jobs)])
        if not answer.next_page_token:
            return last
        page.page_token = answer.next_page_token


@dataclass
class Spent:
    """Seconds a run took, and the CPU seconds it cost: of the processes that did the
    work (nodes, or the bench spawning) and of the job processes they reaped."""

    seconds: float
    own_cpu: float
    jobs_cpu: float

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.seconds + other.seconds,
            self.own_cpu + other.own_cpu,
            self.jobs_cpu + other.jobs_cpu,
        )

    def line(self, count: int) -> str:
        """Rate, CPU per job (own + jobs') and cores kept busy, for `count` jobs."""
        per_job = (1000 * self.own_cpu / count, 1000 * self.jobs_cpu / count)
        cores = (self.own_cpu + self.jobs_cpu) / self.seconds
        return (
            f"{count / self.seconds:5.0f}/s ({per_job[0]:.2f} + {per_job[1]:.2f} ms CPU per "
            f"job, own + the jobs', {cores:.2f} cores busy)"
        )


def local_spawn(count: int) -> Spent:
    """One process spawning and reaping `sh -c true`, `count` times in a row."""
    own_before, jobs_before = this_process_cpu_seconds()
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run(["sh", "-c", "true"], check=True)
    seconds = time.perf_counter() - started
    own_after, jobs_after = this_process_cpu_seconds()
    return Spent(seconds, own_after - own_before, jobs_after - jobs_before)


def nodes_cpu(pids: list[int]) -> tuple[float, float]:
    """CPU seconds so far of the nodes themselves and of the job processes they reaped."""
    spent = [cpu_seconds(pid) for pid in pids]
    return sum(own for own, _ in spent), sum(jobs for _, jobs in spent)


def bare_docker_run(image: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", *DOCKER_FLAGS, image, "sh", "-c", "echo hi"],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return sorted(times)


def _line(label: str, times: list[float]) -> str:
    return (
        f"{label:<44} n={len(times):<4} p50 {percentile(times, 0.5) * 1000:7.1f} ms   "
        f"p90 {percentile(times, 0.9) * 1000:7.1f} ms   max {times[-1] * 1000:7.1f} ms   "
        f"{machine_note()}"
    )


def run_process(args) -> None:
    with running_cluster(3, "--worker-slots", str(args.worker_slots)) as cluster:
        address = cluster.leader(timeout=10).grpc_address
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.SchedulerServiceStub(channel)
            submit_to_completed(stub, "true", 5)  # warm up
            for watch in WATCHERS:
                times = submit_to_completed(stub, "true", args.jobs, watch=watch)
                print(_line(f"submit → completed, `true`, {watch}", times), flush=True)
            leader_pid = cluster.leader(timeout=10).process.pid
            pids = [node.process.pid for node in cluster.nodes.values()]
            names = {pid: f"follower{n}" for n, pid in enumerate(pids)} | {leader_pid: "leader"}
            for round_number in range(args.rounds):
                first_half = local_spawn(args.queue // 2)
                profilers = []
                if args.py_spy:
                    outputs = {pid: f"drain{round_number}-{name}" for pid, name in names.items()}
                    profilers = start_profilers(args.py_spy, outputs)
                own_before, jobs_before = nodes_cpu(pids)
                try:
                    drained = drain_seconds(stub, args.queue)
                    own_after, jobs_after = nodes_cpu(pids)
                finally:
                    stop_profilers(profilers)
                cluster = Spent(drained, own_after - own_before, jobs_after - jobs_before)
                second_half = local_spawn(args.queue - args.queue // 2)
                local = first_half + second_half
                halves = "/".join(
                    f"{count / half.seconds:.0f}"
                    for count, half in (
                        (args.queue // 2, first_half),
                        (args.queue - args.queue // 2, second_half),
                    )
                )
                print(
                    f"{args.queue} `true` jobs: cluster drains {cluster.line(args.queue)}, "
                    f"one process spawns and reaps `sh -c true` {local.line(args.queue)} "
                    f"(halves before/after: {halves}/s) "
                    f"= {local.seconds / drained:.2f}x   {machine_note()}",
                    flush=True,
                )


def run_docker(args) -> None:
    with running_cluster(3, "--executor", "docker", "--image", args.image) as cluster:
        address = cluster.leader(timeout=10).grpc_address
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.SchedulerServiceStub(channel)
            submit_to_completed(stub, "echo hi", 2, args.image)  # warm up
            for _ in range(args.rounds):
                bare = bare_docker_run(args.image, args.jobs)
                print(_line(f"bare docker run --rm {args.image}", bare), flush=True)
                for watch in WATCHERS:
                    times = submit_to_completed(stub, "echo hi", args.jobs, args.image, watch)
                    print(_line(f"jobsched submit → completed, `echo hi`, {watch}", times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=("process", "docker"), default="process")
    parser.add_argument("--jobs", type=int, default=100, help="latency samples")
    parser.add_argument("--queue", type=int, default=500, help="jobs in the drain test")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image", default="jobsched-test/busybox:latest")
    parser.add_argument(
        "--worker-slots", type=int, default=4, help="per node (process executor; default 4)"
    )
    parser.add_argument(
        "--py-spy", metavar="DIR", default="", help="profile each node's drains into DIR"
    )
    args = parser.parse_args()
    if args.executor == "process":
        run_process(args)
    else:
        args.jobs = min(args.jobs, 20)
        run_docker(args)


if __name__ == "__main__":
    main()
