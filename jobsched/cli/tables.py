"""The human-readable (table) form of each answer, in the words of CLI.md.

Times are shown in local time with how long ago; colour is added by the console only
when it writes to a terminal.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.text import Text

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import views
from jobsched.cli.layout import Column, single_line, table
from jobsched.cli.output import Printer

STATUS_STYLES = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def ago(ms: int, now: int) -> str:
    """`just now`, `12s ago`, `5m ago`, `3h ago`, `2d ago`."""
    seconds = (now - ms) // 1000
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def duration(ms: int) -> str:
    """`850ms`, `12.3s`, `4m 05s`, `2h 03m`."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def moment(ms: int, now: int) -> str:
    """A time as `2026-01-28 12:45:41 (5s ago)`, local time."""
    local = datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    return f"{local} ({ago(ms, now)})"


def status_text(number: int) -> Text:
    name = views.status_name(number)
    return Text(name, style=STATUS_STYLES.get(name, ""))


def _labelled(printer: Printer, pairs: list[tuple[str, Text | str]]) -> None:
    """`Label:  value` lines, the values aligned."""
    width = max(len(label) for label, _ in pairs) + 1
    for label, value in pairs:
        value = value if isinstance(value, Text) else Text(value)
        printer.show(Text(f"{label}:".ljust(width) + "  ") + value)


def _block(printer: Printer, label: str, text: str) -> None:
    """A captured stream under its label, each line indented two spaces."""
    printer.show(Text(f"{label}:", style="bold"))
    for line in text.rstrip("\n").split("\n"):
        printer.show("  " + line)


def submitted(printer: Printer, response: pb.SubmitJobResponse) -> None:
    printer.show(Text("Job submitted successfully!", style="green"))
    printer.show(f"Job ID: {response.job_id}")


def submitted_batch(printer: Printer, responses: list[pb.SubmitJobResponse]) -> None:
    printer.show(Text(f"{len(responses)} jobs submitted successfully!", style="green"))
    for response in responses:
        printer.show(f"Job ID: {response.job_id}")


def job_status(printer: Printer, job: pb.GetJobStatusResponse, now: int) -> None:
    pairs: list[tuple[str, Text | str]] = [
        ("Job ID", job.job_id),
        ("Status", status_text(job.status)),
        ("Command", single_line(job.command)),
    ]
    if job.image:
        pairs.append(("Image", job.image))
    if job.assigned_worker:
        pairs.append(("Worker", str(job.assigned_worker)))
    if job.executed_by:
        pairs.append(("Executed by", f"node {job.executed_by}"))
    if job.HasField("exit_code"):
        pairs.append(("Exit code", str(job.exit_code)))
    pairs.append(("Created", moment(job.created_at_ms, now)))
    if job.HasField("started_at_ms"):
        pairs.append(("Started", moment(job.started_at_ms, now)))
    if job.HasField("completed_at_ms"):
        pairs.append(("Completed", moment(job.completed_at_ms, now)))
        if job.HasField("started_at_ms"):
            pairs.append(("Duration", duration(job.completed_at_ms - job.started_at_ms)))
    if job.timeout_seconds:
        pairs.append(("Timeout", f"{job.timeout_seconds}s"))
    if job.attempts:
        pairs.append(("Attempts", str(job.attempts)))
    _labelled(printer, pairs)
    if job.output:
        _block(printer, "Output", job.output)
    if job.error:
        _block(printer, "Error", job.error)
    if job.output_truncated:
        printer.show(Text("(output truncated: the node keeps only the first part)", style="dim"))


def job_list(
    printer: Printer, jobs: list[pb.JobInfo], total_count: int, has_more: bool, now: int
) -> None:
    if not jobs:
        printer.show("No jobs found.")
        return
    columns = [
        Column("JOB ID"),
        Column("STATUS"),
        Column("WORKER", align_right=True),
        Column("COMMAND", flexible=True),
        Column("CREATED"),
    ]
    rows = [
        [
            job.job_id,
            status_text(job.status),
            str(job.assigned_worker or "-"),
            job.command,
            ago(job.created_at_ms, now),
        ]
        for job in jobs
    ]
    for line in table(columns, rows, printer.out.width):
        printer.show(line)
    printer.show("")
    printer.show(f"Showing {len(jobs)} of {total_count} jobs")
    if has_more:
        printer.show(Text("(Use --all to fetch all pages)", style="dim"))


def cancelled(printer: Printer, response: pb.CancelJobResponse) -> None:
    printer.show(Text(response.message, style="green"))


def _node_state(node: pb.NodeInfo) -> Text:
    state = Text("[+] alive", style="green") if node.is_alive else Text("[-] dead", style="red")
    if node.draining:
        state += Text(" (draining)", style="yellow")
    return state


def cluster_status(printer: Printer, response: pb.GetClusterStatusResponse) -> None:
    leader = f"node {response.leader_id}" if response.leader_id else "unknown"
    _labelled(printer, [("Term", str(response.current_term)), ("Leader", leader)])
    printer.show("")
    columns = [Column("NODE", align_right=True), Column("ADDRESS"), Column("ROLE"), Column("STATE")]
    rows = [
        [str(node.node_id), node.address, node.role or "unknown", _node_state(node)]
        for node in response.nodes
    ]
    for line in table(columns, rows, printer.out.width):
        printer.show(line)


def raft_log(printer: Printer, response: pb.GetRaftLogEntriesResponse) -> None:
    if response.first_available_index > 1:
        printer.show(
            Text(
                f"(Log compacted: entries before index {response.first_available_index} "
                "are in the snapshot)",
                style="dim",
            )
        )
    columns = [
        Column("INDEX", align_right=True),
        Column("TERM", align_right=True),
        Column("COMMITTED"),
        Column("TYPE"),
        Column("DETAILS", flexible=True),
    ]
    rows = [
        [
            str(entry.index),
            str(entry.term),
            "yes" if entry.is_committed else "no",
            views.command_type(entry.command),
            views.command_details(entry.command),
        ]
        for entry in response.entries
    ]
    for line in table(columns, rows, printer.out.width):
        printer.show(line)
    printer.show("")
    printer.show(
        f"Commit index: {response.commit_index}  Last log index: {response.last_log_index}"
    )
