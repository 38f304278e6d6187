"""Waiting on a job through the public APIs, from the reactor."""

from jobsched._proto import scheduler_pb2 as pb
from tests.nodeproc import Node, wait_for

TERMINAL = {pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED}


async def wait_status_in(
    node: Node, job_id: str, statuses: set, what: str, timeout: float = 60
) -> pb.GetJobStatusResponse:
    """Poll GetJobStatus until the job's status is one of `statuses`; return the answer."""

    async def reached():
        answer = await node.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id), 10)
        return answer if answer.status in statuses else None

    return await wait_for(reached, timeout, f"job {job_id} {what}")


async def wait_finished(node: Node, job_id: str, timeout: float = 60) -> pb.GetJobStatusResponse:
    """The job's final status, once it is terminal."""
    return await wait_status_in(node, job_id, TERMINAL, "to finish", timeout)


async def wait_status(
    node: Node, job_id: str, status: int, timeout: float = 60
) -> pb.GetJobStatusResponse:
    return await wait_status_in(node, job_id, {status}, f"to reach status {status}", timeout)
