"""Reads answered from rendered jobs: each job rendered once per version and kept by
the table (render_page, render_all), the ListJobs answer put together from serialized
JobInfos, and the REST array from each job's JSON."""

from __future__ import annotations

import json

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.json_views import job_json, job_json_bytes
from jobsched.jobs import commands, wire
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.jobs.table import JobTable, ListQuery

DONE = JobResult(JobStatus.COMPLETED, 0, "out", "", False, 1500, 2000)


class Counting:
    """A renderer that counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, job) -> bytes:
        self.calls.append(job.job_id)
        return f"{job.job_id}:{job.status.label}".encode()


def table_of(count: int) -> JobTable:
    table = JobTable()
    for n in range(count):
        table.apply(n + 1, commands.submit_job(f"job-{n:03d}", f"echo {n}", 1000 + n))
    return table


class RenderCacheTests(unittest.TestCase):
    def test_each_job_is_rendered_once_until_it_changes(self):
        table = table_of(5)
        render = Counting()
        first = table.render_all(ListQuery(), "k", render)
        again = table.render_all(ListQuery(), "k", render)
        self.assertEqual(first, again)
        self.assertEqual(len(render.calls), 5)
        table.apply(10, commands.assign_job("job-002", 1, 1))
        changed = table.render_all(ListQuery(), "k", render)
        self.assertEqual(render.calls[5:], ["job-002"])
        self.assertEqual(changed[2], b"job-002:running")

    def test_a_result_and_a_cancel_drop_the_rendering_too(self):
        table = table_of(2)
        render = Counting()
        table.render_all(ListQuery(), "k", render)
        table.apply(3, commands.assign_job("job-000", 1, 1))
        table.apply(4, commands.batch_update([commands.status_update("job-000", DONE, 1, 1)]))
        table.apply(5, commands.cancel_job("job-001", 3000))
        self.assertEqual(
            table.render_all(ListQuery(), "k", render),
            [b"job-000:completed", b"job-001:cancelled"],
        )

    def test_keys_are_kept_apart(self):
        table = table_of(1)
        table.render_all(ListQuery(), "a", lambda job: b"A")
        self.assertEqual(table.render_all(ListQuery(), "b", lambda job: b"B"), [b"B"])

    def test_a_rendered_page_is_the_page_list_jobs_gives(self):
        table = table_of(7)
        table.apply(20, commands.assign_job("job-003", 1, 1))
        for query in (
            ListQuery(page_size=3),
            ListQuery(page_size=3, newest_first=True),
            ListQuery(page_size=2, status=JobStatus.PENDING),
            ListQuery(page_size=2, command_substring="ECHO 1"),
        ):
            listed = table.list_jobs(query)
            rendered = table.render_page(query, "id", lambda job: job.job_id.encode())
            self.assertEqual(rendered.items, [job.job_id.encode() for job in listed.jobs])
            self.assertEqual(
                (rendered.next_page_token, rendered.total_count),
                (listed.next_page_token, listed.total_count),
            )
            if listed.next_page_token:
                follow = ListQuery(**{**vars(query), "page_token": listed.next_page_token})
                self.assertEqual(
                    table.render_page(follow, "id", lambda job: job.job_id.encode()).items,
                    [job.job_id.encode() for job in table.list_jobs(follow).jobs],
                )

    def test_render_all_filters_and_orders_like_the_pages(self):
        table = table_of(12)
        table.apply(30, commands.assign_job("job-001", 1, 1))
        query = ListQuery(command_substring="echo 1", newest_first=True)
        everything = table.render_all(query, "id", lambda job: job.job_id.encode())
        self.assertEqual(everything, [b"job-011", b"job-010", b"job-001"])
        running = table.render_all(ListQuery(status=JobStatus.RUNNING), "id2", lambda j: b"r")
        self.assertEqual(running, [b"r"])

    def test_a_restored_table_renders_afresh(self):
        table = table_of(2)
        table.render_all(ListQuery(), "k", lambda job: b"old")
        copy = JobTable()
        copy.restore(table.snapshot())
        self.assertEqual(copy.render_all(ListQuery(), "k", lambda job: b"new"), [b"new"] * 2)


class SerializedAnswerTests(unittest.TestCase):
    def test_list_jobs_bytes_are_what_protobuf_writes(self):
        table = table_of(150)
        table.apply(200, commands.assign_job("job-007", 3, 1))
        for size, token_wanted in ((1, True), (130, True), (1000, False)):
            page = table.list_jobs(ListQuery(page_size=size))
            expected = pb.ListJobsResponse(
                jobs=[wire.job_to_job_info(job) for job in page.jobs],
                next_page_token=page.next_page_token,
                total_count=page.total_count,
            )
            rendered = table.render_page(ListQuery(page_size=size), "info", wire.job_info_bytes)
            data = wire.list_jobs_response_bytes(
                rendered.items, rendered.next_page_token, rendered.total_count
            )
            self.assertEqual(data, expected.SerializeToString())
            self.assertEqual(bool(page.next_page_token), token_wanted)
        self.assertEqual(wire.list_jobs_response_bytes([], "", 0), b"")

    def test_rest_array_is_what_json_dumps_writes(self):
        table = table_of(3)
        items = table.render_all(ListQuery(), "json", job_json_bytes)
        jobs = table.list_jobs(ListQuery()).jobs
        self.assertEqual(
            b"[" + b", ".join(items) + b"]",
            json.dumps([job_json(job) for job in jobs]).encode(),
        )
