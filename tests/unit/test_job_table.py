"""JobTable: every apply rule, the queries, paging tokens, snapshots."""

from __future__ import annotations

import itertools
import json

import pytest
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2
from jobsched.api.errors import InvalidArgument
from jobsched.interfaces import IStateMachine
from jobsched.jobs import commands
from jobsched.jobs.model import Job, JobResult, JobStatus
from jobsched.jobs.table import (
    IDEMPOTENCY_WINDOW_MS,
    JobTable,
    ListQuery,
)

T0 = 1_700_000_000_000
_index = itertools.count(1)


def apply(table: JobTable, command: scheduler_pb2.Command):
    return table.apply(next(_index), command)


def submit(table, job_id, created=T0, command="echo hi", key="", **kwargs):
    return apply(
        table, commands.submit_job(job_id, command, created, idempotency_key=key, **kwargs)
    )


def assign(table, job_id, worker=1, attempt=1):
    return apply(table, commands.assign_job(job_id, worker, attempt))


def result(
    status=JobStatus.COMPLETED,
    exit_code=0,
    output="out",
    error="",
    started=T0 + 10,
    completed=T0 + 20,
    truncated=False,
):
    return JobResult(status, exit_code, output, error, truncated, started, completed)


def finish(table, job_id, worker=1, attempt=1, **kwargs):
    return apply(table, commands.update_job_status(job_id, result(**kwargs), worker, attempt))


def cancel(table, job_id, at=T0 + 99):
    return apply(table, commands.cancel_job(job_id, at))


def running_job(table, job_id, worker=1):
    submit(table, job_id)
    assign(table, job_id, worker)


def ids(jobs):
    return [job.job_id for job in jobs]


# ---------------------------------------------------------------------- interface


def test_job_table_provides_state_machine():
    assert verifyObject(IStateMachine, JobTable())


def test_noop_entry_changes_nothing():
    table = JobTable()
    before = table.snapshot()
    assert apply(table, scheduler_pb2.Command()) is None
    assert table.snapshot() == before


# ---------------------------------------------------------------------- submit


def test_submit_adds_pending_job_with_entry_fields():
    table = JobTable()
    job = submit(
        table, "a", command="Echo X", image="alpine:3", timeout_seconds=7, max_attempts=2, key="k1"
    )
    assert job == Job(
        job_id="a",
        command="Echo X",
        created_at_ms=T0,
        image="alpine:3",
        timeout_seconds=7,
        max_attempts=2,
        idempotency_key="k1",
    )
    assert job.status is JobStatus.PENDING
    assert table.get("a") == job
    assert len(table) == 1
    assert table.get("missing") is None


def test_submit_known_job_id_returns_existing_job_unchanged():
    table = JobTable()
    submit(table, "a", command="first")
    again = submit(table, "a", command="second", created=T0 + 5)
    assert again.command == "first" and again.created_at_ms == T0
    assert len(table) == 1


def test_submit_known_job_id_after_it_ran_returns_its_current_state():
    table = JobTable()
    running_job(table, "a")
    assert submit(table, "a").status is JobStatus.RUNNING
    assert table.count(JobStatus.PENDING) == 0


def test_submit_without_job_id_is_ignored():
    table = JobTable()
    assert submit(table, "") is None
    assert len(table) == 0


def test_idempotency_key_within_24h_returns_original_job():
    table = JobTable()
    first = submit(table, "a", key="k")
    again = submit(table, "b", created=T0 + IDEMPOTENCY_WINDOW_MS - 1, key="k")
    assert again.job_id == "a" == first.job_id
    assert table.get("b") is None
    assert len(table) == 1


def test_idempotency_key_after_24h_creates_new_job_and_remaps_key():
    table = JobTable()
    submit(table, "a", key="k")
    later = T0 + IDEMPOTENCY_WINDOW_MS
    assert submit(table, "b", created=later, key="k").job_id == "b"
    assert submit(table, "c", created=later + 1000, key="k").job_id == "b"
    assert ids(table.list_jobs(ListQuery()).jobs) == ["a", "b"]


def test_idempotency_window_measured_from_entry_time_even_if_it_steps_back():
    table = JobTable()
    submit(table, "a", key="k")
    assert submit(table, "b", created=T0 - 5000, key="k").job_id == "a"


def test_idempotency_window_holds_when_entry_times_are_out_of_order():
    """A key from a leader whose clock was behind sits after a newer key: it is still
    measured against its own time, not kept alive by its neighbour."""
    table = JobTable()
    submit(table, "a", key="newer", created=T0 + 10_000)
    submit(table, "b", key="older", created=T0)
    again = submit(table, "c", key="older", created=T0 + IDEMPOTENCY_WINDOW_MS)
    assert again.job_id == "c"
    assert submit(table, "d", key="newer", created=T0 + IDEMPOTENCY_WINDOW_MS).job_id == "a"


def test_different_idempotency_keys_make_different_jobs():
    table = JobTable()
    submit(table, "a", key="k1")
    assert submit(table, "b", key="k2").job_id == "b"
    assert submit(table, "c").job_id == "c"
    assert submit(table, "d").job_id == "d"


def test_expired_idempotency_keys_are_forgotten():
    table = JobTable()
    submit(table, "a", key="old")
    submit(table, "b", key="new", created=T0 + 1000)
    submit(table, "c", created=T0 + IDEMPOTENCY_WINDOW_MS + 1)
    keys = [k[0] for k in json.loads(table.snapshot())["idempotency_keys"]]
    assert keys == ["new"]


# ---------------------------------------------------------------------- assign


def test_assign_makes_pending_job_running():
    table = JobTable()
    submit(table, "a")
    job = assign(table, "a", worker=3, attempt=2)
    assert job.status is JobStatus.RUNNING
    assert (job.assigned_worker, job.attempts) == (3, 2)
    assert table.get("a") == job


def test_assign_without_attempt_counts_on():
    table = JobTable()
    submit(table, "a")
    assert assign(table, "a", attempt=0).attempts == 1


@pytest.mark.parametrize("state", ["running", "completed", "failed", "cancelled"])
def test_assign_ignored_unless_pending(state):
    table = JobTable()
    running_job(table, "a", worker=1)
    if state == "completed":
        finish(table, "a")
    elif state == "failed":
        finish(table, "a", status=JobStatus.FAILED, exit_code=1)
    elif state == "cancelled":
        cancel(table, "a")
    before = table.snapshot()
    assert assign(table, "a", worker=2, attempt=2) is None
    assert table.snapshot() == before


def test_assign_unknown_job_or_no_worker_ignored():
    table = JobTable()
    submit(table, "a")
    before = table.snapshot()
    assert assign(table, "nope") is None
    assert assign(table, "a", worker=0) is None
    assert table.snapshot() == before


# ---------------------------------------------------------------------- update


def test_update_completes_running_job_with_result():
    table = JobTable()
    running_job(table, "a", worker=2)
    job = finish(table, "a", worker=2, exit_code=0, output="hello\n", error="warn", truncated=True)
    assert job.status is JobStatus.COMPLETED
    assert job.executed_by == 2
    assert job.exit_code == 0
    assert (job.started_at_ms, job.completed_at_ms) == (T0 + 10, T0 + 20)
    assert (job.output, job.error, job.output_truncated) == ("hello\n", "warn", True)
    assert table.get("a") == job


def test_update_failed_without_exit_code_keeps_it_absent():
    table = JobTable()
    running_job(table, "a")
    job = finish(
        table,
        "a",
        status=JobStatus.FAILED,
        exit_code=None,
        started=None,
        error="Timed out after 30s",
    )
    assert job.status is JobStatus.FAILED
    assert job.exit_code is None and job.started_at_ms is None
    assert job.error == "Timed out after 30s"


def test_update_failed_keeps_nonzero_exit_code():
    table = JobTable()
    running_job(table, "a")
    assert finish(table, "a", status=JobStatus.FAILED, exit_code=3).exit_code == 3


@pytest.mark.parametrize("state", ["pending", "completed", "failed", "cancelled"])
def test_update_ignored_unless_running(state):
    table = JobTable()
    submit(table, "a")
    if state != "pending":
        assign(table, "a")
    if state == "completed":
        finish(table, "a", output="first")
    elif state == "failed":
        finish(table, "a", status=JobStatus.FAILED, exit_code=1)
    elif state == "cancelled":
        cancel(table, "a")
    before = table.snapshot()
    assert finish(table, "a", output="second", exit_code=0) is None
    assert table.snapshot() == before


def test_update_unknown_job_ignored():
    assert finish(JobTable(), "nope") is None


def test_update_with_stale_attempt_ignored():
    table = JobTable()
    submit(table, "a")
    assign(table, "a", attempt=2)
    assert finish(table, "a", attempt=1) is None
    assert finish(table, "a", attempt=3) is None
    assert table.get("a").status is JobStatus.RUNNING
    assert finish(table, "a", attempt=2).status is JobStatus.COMPLETED


def test_update_without_attempt_accepted():
    table = JobTable()
    submit(table, "a")
    assign(table, "a", attempt=2)
    assert finish(table, "a", attempt=0).status is JobStatus.COMPLETED


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELLED, 0])
def test_update_to_non_result_status_ignored(status):
    table = JobTable()
    running_job(table, "a")
    update = scheduler_pb2.UpdateJobStatusCommand(
        job_id="a", status=int(status), executed_by=1, attempt=1
    )
    assert apply(table, scheduler_pb2.Command(update_job_status=update)) is None
    assert table.get("a").status is JobStatus.RUNNING


def test_batch_update_applies_each_and_reports_each():
    table = JobTable()
    running_job(table, "a")
    running_job(table, "b")
    submit(table, "c")
    batch = commands.batch_update(
        [
            commands.status_update("a", result(), 1, 1),
            commands.status_update("c", result(), 1, 1),
            commands.status_update("b", result(status=JobStatus.FAILED, exit_code=2), 1, 1),
            commands.status_update("a", result(output="dup"), 1, 1),
        ]
    )
    outcome = apply(table, batch)
    assert [job and job.status for job in outcome] == [
        JobStatus.COMPLETED,
        None,
        JobStatus.FAILED,
        None,
    ]
    assert table.get("a").output == "out"
    assert table.get("b").exit_code == 2
    assert table.get("c").status is JobStatus.PENDING


# ---------------------------------------------------------------------- cancel


def test_cancel_pending_job():
    table = JobTable()
    submit(table, "a")
    job = cancel(table, "a", at=T0 + 50)
    assert job.status is JobStatus.CANCELLED
    assert job.completed_at_ms == T0 + 50
    assert table.active_count() == 0


def test_cancel_running_job():
    table = JobTable()
    running_job(table, "a", worker=4)
    job = cancel(table, "a", at=T0 + 60)
    assert (job.status, job.completed_at_ms, job.assigned_worker) == (
        JobStatus.CANCELLED,
        T0 + 60,
        4,
    )
    assert table.jobs_running_on(4) == []


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_cancel_terminal_job_returns_it_unchanged(state):
    table = JobTable()
    running_job(table, "a")
    if state == "completed":
        finish(table, "a")
    elif state == "failed":
        finish(table, "a", status=JobStatus.FAILED, exit_code=1)
    else:
        cancel(table, "a", at=T0 + 1)
    before = table.snapshot()
    job = cancel(table, "a", at=T0 + 500)
    assert job.status.label == state
    assert job.completed_at_ms != T0 + 500
    assert table.snapshot() == before


def test_cancel_unknown_job():
    assert cancel(JobTable(), "nope") is None


def test_cancelled_job_ignores_late_result():
    table = JobTable()
    running_job(table, "a")
    cancel(table, "a")
    assert finish(table, "a") is None
    assert table.get("a").status is JobStatus.CANCELLED


# ---------------------------------------------------------------------- workers


def test_register_worker_records_ids():
    table = JobTable()
    for worker in (3, 1, 3, 0):
        assert apply(table, commands.register_worker(worker)) is None
    assert table.workers() == [1, 3]


# ---------------------------------------------------------------------- listeners


def test_listeners_see_each_change_after_it_is_applied():
    table = JobTable()
    seen = []
    table.add_listener(lambda event, job: seen.append((event, job.job_id, job.status)))
    submit(table, "a")
    submit(table, "a")  # duplicate: no event
    assign(table, "a")
    assign(table, "a")  # ignored: no event
    finish(table, "a")
    submit(table, "b")
    cancel(table, "b")
    cancel(table, "b")  # terminal: no event
    apply(table, commands.register_worker(1))
    assert seen == [
        ("submitted", "a", JobStatus.PENDING),
        ("assigned", "a", JobStatus.RUNNING),
        ("finished", "a", JobStatus.COMPLETED),
        ("submitted", "b", JobStatus.PENDING),
        ("cancelled", "b", JobStatus.CANCELLED),
    ]


def test_failing_listener_neither_breaks_apply_nor_other_listeners():
    table = JobTable()
    seen = []

    def broken(event, job):
        raise RuntimeError("boom")

    table.add_listener(broken)
    table.add_listener(lambda event, job: seen.append(event))
    assert submit(table, "a").job_id == "a"
    assert seen == ["submitted"]


def test_removed_listener_is_not_called():
    table = JobTable()
    seen = []
    listener = lambda event, job: seen.append(event)  # noqa: E731
    table.add_listener(listener)
    table.remove_listener(listener)
    submit(table, "a")
    assert seen == []


def test_results_are_copies_not_the_table_records():
    table = JobTable()
    job = submit(table, "a")
    job.status = JobStatus.FAILED
    table.get("a").command = "changed"
    table.pending_jobs()[0].output = "x"
    assert table.get("a") == Job(job_id="a", command="echo hi", created_at_ms=T0)


# ---------------------------------------------------------------------- queries


def test_counts_fifo_and_running_queries():
    table = JobTable()
    for name in "abcdef":
        submit(table, name)
    assign(table, "b", worker=1)
    assign(table, "d", worker=2)
    assign(table, "e", worker=1)
    finish(table, "e")
    cancel(table, "f")
    assert table.active_count() == 4
    assert table.count(JobStatus.PENDING) == 2
    assert ids(table.pending_jobs()) == ["a", "c"]
    assert ids(table.pending_jobs(limit=1)) == ["a"]
    assert ids(table.jobs_running_on(1)) == ["b"]
    assert ids(table.jobs_running_on(2)) == ["d"]
    assert table.jobs_running_on(3) == []
    assert table.running_counts() == {1: 1, 2: 1}


# ---------------------------------------------------------------------- list_jobs


def build_mixed_table():
    """a..h with varied status, workers, commands and times."""
    table = JobTable()
    specs = [
        ("a", "echo Hello", 100),
        ("b", "sleep 5", 200),
        ("c", "ECHO hello", 300),
        ("d", "ls", 400),
        ("e", "echo bye", 500),
        ("f", "sleep 1", 600),
        ("g", "echo HELLO world", 700),
        ("h", "true", 800),
    ]
    for job_id, command, created in specs:
        submit(table, job_id, created=created, command=command)
    assign(table, "a", worker=1)
    finish(table, "a", worker=2)  # assigned 1, executed by 2
    assign(table, "b", worker=2)
    assign(table, "c", worker=3)
    finish(table, "c", worker=3, status=JobStatus.FAILED, exit_code=1)
    cancel(table, "d")
    assign(table, "g", worker=1)
    return table


def listed(table, **filters):
    return ids(table.list_jobs(ListQuery(page_size=1000, **filters)).jobs)


def test_list_all_in_creation_order():
    page = build_mixed_table().list_jobs(ListQuery())
    assert ids(page.jobs) == list("abcdefgh")
    assert page.total_count == 8
    assert page.next_page_token == ""


def test_list_filter_status():
    table = build_mixed_table()
    assert listed(table, status=JobStatus.PENDING) == ["e", "f", "h"]
    assert listed(table, status=JobStatus.RUNNING) == ["b", "g"]
    assert listed(table, status=JobStatus.COMPLETED) == ["a"]
    assert listed(table, status=JobStatus.FAILED) == ["c"]
    assert listed(table, status=JobStatus.CANCELLED) == ["d"]


def test_list_filter_worker_matches_assigned_or_executed_by():
    table = build_mixed_table()
    assert listed(table, worker_id=1) == ["a", "g"]
    assert listed(table, worker_id=2) == ["a", "b"]
    assert listed(table, worker_id=3) == ["c"]
    assert listed(table, worker_id=9) == []


def test_list_filter_command_case_insensitive():
    table = build_mixed_table()
    assert listed(table, command_substring="HeLLo") == ["a", "c", "g"]
    assert listed(table, command_substring="sleep") == ["b", "f"]


def test_list_filter_created_bounds_inclusive():
    table = build_mixed_table()
    assert listed(table, created_after_ms=300) == list("cdefgh")
    assert listed(table, created_before_ms=300) == ["a", "b", "c"]
    assert listed(table, created_after_ms=300, created_before_ms=500) == ["c", "d", "e"]


def test_list_filters_combine_with_and():
    table = build_mixed_table()
    assert listed(table, command_substring="echo", worker_id=1) == ["a", "g"]
    assert listed(table, command_substring="echo", worker_id=1, status=JobStatus.RUNNING) == ["g"]
    assert listed(table, command_substring="echo", created_after_ms=200, created_before_ms=600) == [
        "c",
        "e",
    ]
    page = table.list_jobs(ListQuery(page_size=1, command_substring="echo"))
    assert ids(page.jobs) == ["a"] and page.total_count == 4


def submit_many(table, count, start=0, command="job"):
    for n in range(start, start + count):
        submit(table, f"j{n:05d}", created=T0 + n, command=f"{command} {n}")


@pytest.mark.parametrize(
    "page_size, expected", [(0, 100), (1, 1), (1000, 1000), (1001, 1000), (50000, 1000)]
)
def test_page_size_clamped(page_size, expected):
    table = JobTable()
    submit_many(table, 1200)
    page = table.list_jobs(ListQuery(page_size=page_size))
    assert len(page.jobs) == expected
    assert page.total_count == 1200


def test_page_size_clamped_with_filter():
    table = JobTable()
    submit_many(table, 1200)
    assert len(table.list_jobs(ListQuery(page_size=0, command_substring="job")).jobs) == 100
    assert len(table.list_jobs(ListQuery(page_size=5000, command_substring="job")).jobs) == 1000


def read_all_pages(table, query, between=None):
    seen, token, pages = [], "", 0
    while True:
        page = table.list_jobs(ListQuery(**{**query, "page_token": token}))
        seen.extend(ids(page.jobs))
        pages += 1
        token = page.next_page_token
        if not token:
            return seen, pages
        assert pages < 1000, "paging never ends"
        if between:
            between(pages)


@pytest.mark.parametrize(
    "filters", [{}, {"command_substring": "JOB"}, {"status": JobStatus.PENDING}]
)
def test_paging_with_jobs_added_between_pages_never_skips_or_repeats(filters):
    table = JobTable()
    submit_many(table, 2500)
    original = [f"j{n:05d}" for n in range(2500)]
    added = itertools.count(2500)

    def add_jobs(_):
        for _ in range(7):
            n = next(added)
            submit(table, f"j{n:05d}", created=T0 + n, command=f"job {n}")

    seen, pages = read_all_pages(table, {"page_size": 100, **filters}, add_jobs)
    assert len(seen) == len(set(seen))
    assert seen[:2500] == original
    assert seen == sorted(seen)
    assert pages >= 25


def test_paging_over_filtered_set_when_jobs_change_status():
    table = JobTable()
    submit_many(table, 300)
    seen, _ = read_all_pages(
        table,
        {"page_size": 64, "status": JobStatus.PENDING},
        lambda page: assign(table, f"j{page * 64 - 1:05d}"),
    )
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)


def test_last_page_has_no_token_and_exact_fit_has_no_extra_page():
    table = JobTable()
    submit_many(table, 200)
    first = table.list_jobs(ListQuery(page_size=100))
    second = table.list_jobs(ListQuery(page_size=100, page_token=first.next_page_token))
    assert first.next_page_token and not second.next_page_token
    assert len(second.jobs) == 100


def test_page_size_may_change_between_pages():
    table = JobTable()
    submit_many(table, 30)
    first = table.list_jobs(ListQuery(page_size=10))
    rest = table.list_jobs(ListQuery(page_size=100, page_token=first.next_page_token))
    assert ids(first.jobs + rest.jobs) == [f"j{n:05d}" for n in range(30)]


def test_empty_table_lists_nothing():
    page = JobTable().list_jobs(ListQuery(command_substring="x"))
    assert (page.jobs, page.next_page_token, page.total_count) == ([], "", 0)


def token_for(table, **filters):
    token = table.list_jobs(ListQuery(page_size=5, **filters)).next_page_token
    assert token
    return token


def flip_char(token, position):
    replacement = "A" if token[position] != "A" else "B"
    return token[:position] + replacement + token[position + 1 :]


@pytest.mark.parametrize(
    "make_token",
    [
        lambda token: "garbage",
        lambda token: "!!!!",
        lambda token: "é" * 10,
        lambda token: token[:-1],
        lambda token: token + "A",
        lambda token: token + "==",
        lambda token: token[:-1] + "+",
        lambda token: token[:-1] + "/",
        lambda token: flip_char(token, 5),
        lambda token: flip_char(token, len(token) - 3),
        lambda token: " " + token,
        lambda token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_garbled_page_tokens_rejected(make_token):
    table = JobTable()
    submit_many(table, 20)
    bad = make_token(token_for(table))
    with pytest.raises(InvalidArgument) as raised:
        table.list_jobs(ListQuery(page_size=5, page_token=bad))
    assert raised.value.message == "Invalid page token"


@pytest.mark.parametrize(
    "other",
    [
        {"status": JobStatus.PENDING},
        {"worker_id": 1},
        {"command_substring": "job 1"},
        {"created_after_ms": T0 + 1},
        {"created_before_ms": T0 + 100},
    ],
)
def test_token_used_with_other_filters_rejected(other):
    table = JobTable()
    submit_many(table, 20)
    token = token_for(table)
    with pytest.raises(InvalidArgument, match="Invalid page token"):
        table.list_jobs(ListQuery(page_size=5, page_token=token, **other))


def test_token_of_filtered_list_rejected_without_filters():
    table = JobTable()
    submit_many(table, 20)
    token = token_for(table, command_substring="job")
    with pytest.raises(InvalidArgument, match="Invalid page token"):
        table.list_jobs(ListQuery(page_token=token))
    # same filters, differently cased substring: same result set, token accepted
    page = table.list_jobs(ListQuery(page_size=5, page_token=token, command_substring="JOB"))
    assert ids(page.jobs)[0] == "j00005"


def test_token_from_another_node_with_same_log_works():
    first, second = JobTable(), JobTable()
    submit_many(first, 20)
    submit_many(second, 20)
    token = token_for(first, status=JobStatus.PENDING)
    page = second.list_jobs(ListQuery(page_size=5, status=JobStatus.PENDING, page_token=token))
    assert ids(page.jobs) == [f"j{n:05d}" for n in range(5, 10)]


# ---------------------------------------------------------------------- streaming


def test_jobs_after_walks_the_table_in_chunks():
    table = JobTable()
    submit_many(table, 25)
    cursor, seen, done = 0, [], False
    while not done:
        chunk = table.jobs_after(cursor, 10)
        seen += ids(chunk.jobs)
        cursor, done = chunk.cursor, chunk.done
    assert seen == [f"j{n:05d}" for n in range(25)]


def test_jobs_after_stops_at_end_mark_and_filters_status():
    table = JobTable()
    submit_many(table, 10)
    end = table.last_seq
    assign(table, "j00003")
    submit_many(table, 5, start=10)
    first = table.jobs_after(0, 6, status=JobStatus.PENDING, up_to_seq=end)
    assert ids(first.jobs) == ["j00000", "j00001", "j00002", "j00004", "j00005", "j00006"]
    assert not first.done
    second = table.jobs_after(first.cursor, 6, status=JobStatus.PENDING, up_to_seq=end)
    assert ids(second.jobs) == ["j00007", "j00008", "j00009"]
    assert second.done
    assert table.jobs_after(second.cursor, 6, up_to_seq=end).jobs == []


def test_jobs_after_on_empty_table_is_done():
    chunk = JobTable().jobs_after(0, 10)
    assert (chunk.jobs, chunk.cursor, chunk.done) == ([], 0, True)


# ---------------------------------------------------------------------- snapshots


def test_snapshot_restore_round_trip():
    table = build_mixed_table()
    submit(table, "k", key="key-1", created=900, image="busybox", timeout_seconds=9)
    apply(table, commands.register_worker(2))
    apply(table, commands.register_worker(1))
    data = table.snapshot()

    restored = JobTable()
    submit(restored, "stale")
    restored.restore(data)
    assert restored.snapshot() == data
    assert restored.get("stale") is None
    for job_id in "abcdefghk":
        assert restored.get(job_id) == table.get(job_id)
    assert listed(restored) == listed(table)
    assert restored.workers() == [1, 2]
    assert restored.pending_jobs() == table.pending_jobs()
    assert restored.running_counts() == table.running_counts()
    # idempotency keys and sequence numbers survive
    assert submit(restored, "z", key="key-1", created=950).job_id == "k"
    for replica in (table, restored):
        submit(replica, "next", created=1000)
    assert restored.snapshot() == table.snapshot()
    token = token_for(table)
    assert ids(restored.list_jobs(ListQuery(page_size=5, page_token=token)).jobs) == ids(
        table.list_jobs(ListQuery(page_size=5, page_token=token)).jobs
    )


def test_snapshot_keeps_output_and_optional_fields():
    table = JobTable()
    running_job(table, "a")
    finish(table, "a", output="ünïcode\n", error="e", exit_code=0, truncated=True)
    running_job(table, "b")
    finish(table, "b", status=JobStatus.FAILED, exit_code=None, started=None)
    restored = JobTable()
    restored.restore(table.snapshot())
    assert restored.get("a") == table.get("a")
    assert restored.get("a").exit_code == 0
    assert restored.get("b").exit_code is None


def test_snapshot_is_deterministic_across_replicas():
    """Same log, whether applied entry by entry or through a snapshot: same bytes."""
    direct = build_mixed_table()
    via_snapshot = JobTable()
    via_snapshot.restore(build_mixed_table().snapshot())
    for table in (direct, via_snapshot):
        submit(table, "x", key="k", created=1000)
        assign(table, "x", worker=5)
    assert direct.snapshot() == via_snapshot.snapshot()
    assert direct.snapshot() != build_mixed_table().snapshot()


def test_restore_notifies_listeners_and_keeps_them():
    table = JobTable()
    seen = []
    table.add_listener(lambda event, job: seen.append((event, job)))
    table.restore(build_mixed_table().snapshot())
    submit(table, "new")
    assert seen[0] == ("restored", None)
    assert seen[1][0] == "submitted"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": 99}',
        b'{"format": 1, "next_seq": 3, "jobs": [{"seq": 5}], "idempotency_keys": [], "workers": []}',
    ],
)
def test_restore_rejects_bad_data_and_keeps_state(data):
    table = build_mixed_table()
    before = table.snapshot()
    with pytest.raises(ValueError):
        table.restore(data)
    assert table.snapshot() == before


def test_restore_rejects_out_of_order_sequences():
    state = json.loads(build_mixed_table().snapshot())
    state["jobs"][0], state["jobs"][1] = state["jobs"][1], state["jobs"][0]
    with pytest.raises(ValueError):
        JobTable().restore(json.dumps(state).encode())


# ---------------------------------------------------------------------- requeue


def requeue(table, job_id, attempt=1, error="worker 1 lost", at=T0 + 500):
    return apply(table, commands.requeue_job(job_id, attempt, error, at))


def running_attempt(table, job_id, max_attempts=3, attempt=1, worker=1, incarnation=77):
    submit(table, job_id, max_attempts=max_attempts)
    if attempt > 1:  # earlier attempts lost and requeued
        for earlier in range(1, attempt):
            apply(table, commands.assign_job(job_id, 9, earlier))
            requeue(table, job_id, attempt=earlier)
    apply(table, commands.assign_job(job_id, worker, attempt, incarnation))


def test_requeue_with_attempts_left_makes_the_job_pending_again():
    table = JobTable()
    running_attempt(table, "a", max_attempts=3)
    seen = []
    table.add_listener(lambda event, job: seen.append((event, job.job_id)))
    job = requeue(table, "a")
    assert job is not None and job.status is JobStatus.PENDING
    stored = table.get("a")
    assert stored.status is JobStatus.PENDING
    assert (stored.assigned_worker, stored.worker_incarnation) == (0, 0)
    assert stored.attempts == 1  # kept: the next assignment is attempt 2
    assert (stored.error, stored.completed_at_ms) == ("", None)
    assert seen == [("requeued", "a")]
    assert ids(table.pending_jobs()) == ["a"] and table.running_by_worker() == {}


def test_requeued_job_keeps_its_fifo_place_and_runs_attempt_two():
    table = JobTable()
    running_attempt(table, "a")
    submit(table, "b")
    requeue(table, "a")
    assert ids(table.pending_jobs()) == ["a", "b"]
    apply(table, commands.assign_job("a", 2, 2, 88))
    finish(table, "a", worker=1, attempt=1)  # the lost attempt's late result
    assert table.get("a").status is JobStatus.RUNNING
    finish(table, "a", worker=2, attempt=2)
    job = table.get("a")
    assert (job.status, job.executed_by, job.attempts) == (JobStatus.COMPLETED, 2, 2)


def test_requeue_of_the_last_attempt_fails_the_job():
    table = JobTable()
    running_attempt(table, "a", max_attempts=2, attempt=2)
    seen = []
    table.add_listener(lambda event, job: seen.append(event))
    job = requeue(table, "a", attempt=2, error="worker 1 lost", at=T0 + 700)
    assert job.status is JobStatus.FAILED
    stored = table.get("a")
    assert (stored.status, stored.error, stored.exit_code) == (
        JobStatus.FAILED,
        "worker 1 lost",
        None,
    )
    assert stored.completed_at_ms == T0 + 700
    assert stored.attempts == 2
    assert seen == ["finished"]
    assert table.count(JobStatus.FAILED) == 1 and table.active_count() == 0


def test_requeue_with_max_attempts_one_fails_at_once():
    table = JobTable()
    running_attempt(table, "a", max_attempts=1)
    assert requeue(table, "a").status is JobStatus.FAILED


def test_requeue_with_stale_attempt_ignored():
    table = JobTable()
    running_attempt(table, "a", attempt=2)
    before = table.snapshot()
    assert requeue(table, "a", attempt=1) is None
    assert table.snapshot() == before


@pytest.mark.parametrize("state", ["pending", "completed", "failed", "cancelled"])
def test_requeue_ignored_unless_running(state):
    table = JobTable()
    submit(table, "a", max_attempts=3)
    if state in ("completed", "failed"):
        assign(table, "a")
        status = JobStatus[state.upper()]
        finish(table, "a", status=status, exit_code=int(status is JobStatus.FAILED))
    elif state == "cancelled":
        cancel(table, "a")
    before = table.snapshot()
    assert requeue(table, "a", attempt=table.get("a").attempts) is None
    assert table.snapshot() == before


def test_requeue_unknown_job_ignored():
    table = JobTable()
    before = table.snapshot()
    assert requeue(table, "nope") is None
    assert table.snapshot() == before


def test_assign_records_worker_incarnation_and_snapshot_keeps_it():
    table = JobTable()
    running_attempt(table, "a", incarnation=2**62 + 5)
    assert table.get("a").worker_incarnation == 2**62 + 5
    restored = JobTable()
    restored.restore(table.snapshot())
    assert restored.get("a").worker_incarnation == 2**62 + 5
    assert restored.snapshot() == table.snapshot()


def test_running_by_worker_groups_running_jobs():
    table = JobTable()
    running_attempt(table, "a", worker=1)
    running_attempt(table, "b", worker=2)
    running_attempt(table, "c", worker=1)
    submit(table, "d")
    grouped = table.running_by_worker()
    assert {worker: ids(jobs) for worker, jobs in grouped.items()} == {1: ["a", "c"], 2: ["b"]}
    grouped[1][0].status = JobStatus.FAILED  # copies, not the table's records
    assert table.get("a").status is JobStatus.RUNNING


def test_snapshot_after_a_requeue_shows_the_requeue():
    """A snapshot taken while the job ran must not leak into a later one."""
    table = JobTable()
    running_attempt(table, "a", incarnation=99)
    table.snapshot()
    requeue(table, "a")
    restored = JobTable()
    restored.restore(table.snapshot())
    job = restored.get("a")
    assert (job.status, job.assigned_worker, job.worker_incarnation, job.attempts) == (
        JobStatus.PENDING,
        0,
        0,
        1,
    )
