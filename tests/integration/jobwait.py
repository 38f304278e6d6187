"""Waiting on a job through the public APIs."""

from jobsched._proto import scheduler_pb2 as pb
from tests.nodeproc import Node, wait_until

TERMINAL = {pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED}


def wait_finished(node: Node, job_id: str, timeout: float = 30) -> pb.GetJobStatusResponse:
    """Poll GetJobStatus until the job is terminal; return its final status."""

    def finished():
        answer = node.scheduler.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=5)
        return answer if answer.status in TERMINAL else None

    return wait_until(finished, timeout, f"job {job_id} to finish")


def wait_status(node: Node, job_id: str, status: int, timeout: float = 30):
    def reached():
        answer = node.scheduler.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=5)
        return answer if answer.status == status else None

    return wait_until(reached, timeout, f"job {job_id} to reach status {status}")
