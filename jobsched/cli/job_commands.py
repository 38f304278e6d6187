"""`jobsched job ...`: submit, status, cancel, list, wait, logs."""

from __future__ import annotations

import argparse

from rich.text import Text

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import tables, views
from jobsched.cli.connection import Connection, Target
from jobsched.cli.context import CommandContext
from jobsched.cli.failures import EXIT_INTERRUPTED, CliExit, CliFailure
from jobsched.cli.job_output import (
    STDERR,
    STDOUT,
    finished_output,
    print_output,
    streamed_output,
)
from jobsched.cli.outcome import exit_code_of, exit_code_of_end, timed_out
from jobsched.cli.redirect import call_leader
from jobsched.cli.waiting import wait_until_final
from jobsched.jobs import validation

STREAM_WARNING = (
    "Warning: --stream only supports --status; --worker, --command-substr, "
    "and time filters are ignored"
)


def submit(args: argparse.Namespace, context: CommandContext) -> int:
    """SubmitJob at the leader; with --wait, wait for the job and end as it did."""
    request = pb.SubmitJobRequest(
        command=validation.validate_command(args.command),
        timeout_seconds=args.timeout or 0,
        idempotency_key=validation.validate_idempotency_key(args.idempotency_key or ""),
        max_attempts=validation.validate_max_attempts(args.max_attempts or 0),
    )
    if args.image:
        request.image = validation.validate_image(args.image)
    printer = context.printer
    response, leader = call_leader(context.settings, "SubmitJob", request, printer.notice)
    if not args.wait:
        if printer.json_mode:
            printer.json(views.submitted(response))
        else:
            tables.submitted(printer, response)
        return 0
    if not printer.json_mode:  # stdout carries only the job's own output
        printer.notice(Text("Job submitted successfully!", style="green"))
        printer.notice(f"Job ID: {response.job_id}")
    return _wait_and_finish(context, leader, response.job_id, max_wait=None)


def wait(args: argparse.Namespace, context: CommandContext) -> int:
    return _wait_and_finish(context, context.settings.target, args.job_id, args.max_wait)


def _wait_and_finish(
    context: CommandContext, target: Target, job_id: str, max_wait: float | None
) -> int:
    printer = context.printer
    with Connection(context.settings, target) as connection:
        job = wait_until_final(
            connection,
            job_id,
            printer,
            resume_hint=context.command_line("job", "wait", job_id, target=target),
            cancel_hint=context.command_line("job", "cancel", job_id, target=target),
            max_wait=max_wait,
        )
    if printer.json_mode:
        printer.json(views.job_status(job))
    else:
        print_output(printer, finished_output(job), frozenset({STDOUT, STDERR}))
        _summarise_unsuccessful(printer, job)
    return exit_code_of(job)


def _summarise_unsuccessful(printer, job: pb.GetJobStatusResponse) -> None:
    if job.status == pb.JOB_STATUS_COMPLETED:
        return
    if job.status == pb.JOB_STATUS_CANCELLED:
        summary = f"Job {job.job_id} was cancelled"
    elif timed_out(job):
        summary = f"Job {job.job_id} timed out"
    elif job.HasField("exit_code"):
        summary = f"Job {job.job_id} failed with exit code {job.exit_code}"
    else:
        summary = f"Job {job.job_id} failed"
    printer.notice(Text(summary, style="red"))


def status(args: argparse.Namespace, context: CommandContext) -> int:
    with Connection(context.settings) as connection:
        job = connection.call("GetJobStatus", pb.GetJobStatusRequest(job_id=args.job_id))
    if context.printer.json_mode:
        context.printer.json(views.job_status(job))
    else:
        tables.job_status(context.printer, job, tables.now_ms())
    return 0


def cancel(args: argparse.Namespace, context: CommandContext) -> int:
    request = pb.CancelJobRequest(job_id=args.job_id)
    response, _ = call_leader(context.settings, "CancelJob", request, context.printer.notice)
    if context.printer.json_mode:
        context.printer.json(views.cancelled(response))
    else:
        tables.cancelled(context.printer, response)
    return 0


def parse_status_filter(text: str | None) -> int:
    """The JobStatus of `--status` (any case); 0 (any) when absent."""
    if text is None:
        return pb.JOB_STATUS_UNSPECIFIED
    number = views.status_number(text)
    if number is None:
        raise CliFailure(f"Unknown status '{text}'. Valid values: {', '.join(views.STATUS_NAMES)}")
    return number


def list_jobs(args: argparse.Namespace, context: CommandContext) -> int:
    """ListJobs one page (or every page with --all), or StreamJobs with --stream."""
    status_filter = parse_status_filter(args.status)
    printer = context.printer
    with Connection(context.settings) as connection:
        if args.stream:
            if (
                args.worker
                or args.command_substr
                or args.created_after_ms
                or args.created_before_ms
            ):
                printer.notice(STREAM_WARNING)
            request = pb.StreamJobsRequest(status_filter=status_filter)
            jobs = list(connection.stream("StreamJobs", request))
            total_count, has_more = len(jobs), False
        else:
            jobs, total_count, has_more = _list_pages(connection, args, status_filter)
    if printer.json_mode:
        printer.json(views.job_list(jobs, total_count, has_more))
    else:
        tables.job_list(printer, jobs, total_count, has_more, tables.now_ms())
    return 0


def _list_pages(connection: Connection, args, status_filter: int) -> tuple[list, int, bool]:
    request = pb.ListJobsRequest(
        page_size=args.page_size,
        status_filter=status_filter,
        worker_id_filter=args.worker or 0,
        command_filter=args.command_substr or "",
        created_after_ms=args.created_after_ms or 0,
        created_before_ms=args.created_before_ms or 0,
    )
    jobs: list[pb.JobInfo] = []
    while True:
        page = connection.call("ListJobs", request)
        jobs.extend(page.jobs)
        if not page.next_page_token or not args.all:
            return jobs, page.total_count, bool(page.next_page_token)
        request.page_token = page.next_page_token


def logs(args: argparse.Namespace, context: CommandContext) -> int:
    """A job's output so far (StreamJobOutput); with -f, followed until the job is
    final, ending with its exit code."""
    printer = context.printer
    streams = frozenset(
        {STDOUT} if args.stdout_only else {STDERR} if args.stderr_only else {STDOUT, STDERR}
    )
    request = pb.StreamJobOutputRequest(job_id=args.job_id, follow=args.follow)
    with Connection(context.settings) as connection:
        chunks = connection.stream("StreamJobOutput", request, follow=args.follow)
        try:
            end = print_output(printer, streamed_output(chunks, printer.notice), streams)
        except KeyboardInterrupt:
            cancel_hint = context.command_line("job", "cancel", args.job_id)
            printer.notice(f"Stopped following; the job goes on. Cancel it with: {cancel_hint}")
            raise CliExit(EXIT_INTERRUPTED) from None
    if end is None or not end.is_final:
        if args.follow:
            raise CliFailure(f"The output stream of job {args.job_id} ended before the job did")
        follow = context.command_line("job", "logs", "-f", args.job_id)
        state = f"is {end.status}" if end is not None else "is not final"
        printer.notice(f"Job {args.job_id} {state}; follow its output with: {follow}")
        return 0
    if not args.follow:
        return 0
    if end.status == "FAILED" and end.exit_code is None:
        return _exit_code_from_status(context, args.job_id)
    return exit_code_of_end(end)


def _exit_code_from_status(context: CommandContext, job_id: str) -> int:
    """A job that failed without a code timed out (124) or not (1): its attempt
    history tells, once this node's table has the job final too."""
    with Connection(context.settings) as connection:
        job = wait_until_final(
            connection,
            job_id,
            context.printer,
            resume_hint=context.command_line("job", "wait", job_id),
            cancel_hint=context.command_line("job", "cancel", job_id),
        )
    return exit_code_of(job)
