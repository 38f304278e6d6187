"""The `jobsched` client commands as a user runs them, against real 3-node clusters.

Each class shares one cluster among its tests; a test asserts only on the jobs it
created (found by a marker in their commands) or on what it changed itself.
"""

import signal
import uuid

import wcwidth
from twisted.internet import defer
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from tests.cli_contract import STATUS_EXT_KEYS, STATUS_KEYS
from tests.e2e.clirun import SharedCluster, TerminalRun, addr, parsed, run_cli
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import wait_for

VALID_STATUSES = "Valid values: pending, running, completed, failed, cancelled"


def marker() -> str:
    return uuid.uuid4().hex[:10]


class CliTestCase(unittest.TestCase):
    timeout = 240

    def assertOk(self, result) -> None:
        self.assertEqual(result.returncode, 0, result)
        self.assertNotIn("Traceback", result.stderr)

    def assertError(self, result, message: str, exit_code: int = 1) -> None:
        """One `Error:` line on stderr (maybe a Hint: line), no traceback."""
        self.assertEqual(result.returncode, exit_code, result)
        lines = result.stderr.splitlines()
        self.assertEqual(lines[0], f"Error: {message}", result)
        self.assertTrue(all(line.startswith("Hint: ") for line in lines[1:]), result)


class JobCommandTests(CliTestCase):
    """job submit / status / cancel / list / wait / logs, in both output formats."""

    shared = SharedCluster()

    async def setUp(self):
        self.cluster = await self.shared.join(self)
        self.leader = await self.cluster.find_leader()
        self.follower = next(n for n in self.cluster.nodes.values() if n is not self.leader)

    async def via_follower(self, *args: str, fresh_args=None):
        """Run the CLI against a follower, expecting a redirect to the leader. Should the
        leadership move meanwhile (a new term: the "follower" may have led by then),
        try again, with new arguments from `fresh_args` when given."""
        for _attempt in range(3):
            leader = await self.cluster.find_leader()
            term = (await self.cluster.view(leader.node_id))["current_term"]
            follower = next(n for n in self.cluster.nodes.values() if n is not leader)
            if fresh_args is not None:
                args = await fresh_args()
            result = await run_cli(*addr(follower), *args)
            redirected = f"Redirecting to leader at http://{leader.grpc_address}..."
            if redirected in result.stderr:
                return result, args
            views = await self.cluster.views()
            if {view["current_term"] for view in views.values()} == {term}:
                self.fail(f"no redirect from node {follower.node_id} to {leader.node_id}: {result}")
        self.fail(f"the leadership kept moving: {result}")

    async def finished_everywhere(self, job_id: str) -> None:
        """Wait until every node has applied the job's final status."""
        for node in self.cluster.nodes.values():
            await wait_finished(node, job_id)

    async def submit(self, command: str, *extra: str) -> str:
        result = await run_cli(*addr(self.leader), "-o", "json", "job", "submit", command, *extra)
        self.assertOk(result)
        return parsed(result)["job_id"]

    async def test_submit_and_status_in_both_formats(self):
        result = await run_cli(*addr(self.leader), "job", "submit", "echo hello; echo warn >&2")
        self.assertOk(result)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "Job submitted successfully!")
        self.assertTrue(lines[1].startswith("Job ID: "), result)
        job_id = lines[1].removeprefix("Job ID: ")
        await self.finished_everywhere(job_id)

        table = await run_cli(*addr(self.follower), "job", "status", job_id)
        self.assertOk(table)
        self.assertRegex(table.stdout, rf"Job ID:\s+{job_id}\n")
        self.assertRegex(table.stdout, r"Status:\s+COMPLETED\n")
        moment = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \((\d+[smhd] ago|just now)\)"
        self.assertRegex(table.stdout, rf"Created:\s+{moment}\n")
        self.assertIn("Output:\n  hello\nError:\n  warn\n", table.stdout)

        answer = parsed(await run_cli(*addr(self.follower), "-o", "json", "job", "status", job_id))
        self.assertEqual(list(answer), STATUS_KEYS + STATUS_EXT_KEYS)
        self.assertEqual(answer["job_id"], job_id)
        self.assertEqual(answer["status"], "COMPLETED")
        self.assertEqual((answer["output"], answer["error"]), ("hello\n", "warn\n"))
        self.assertEqual(answer["exit_code"], 0)
        self.assertIn(answer["executed_by"], self.cluster.nodes)
        self.assertIsInstance(answer["created_at_ms"], int)
        self.assertGreaterEqual(answer["completed_at_ms"], answer["created_at_ms"])
        self.assertEqual(answer["attempts"], 1)

    async def test_submit_json_has_exactly_its_keys(self):
        result = await run_cli(*addr(self.leader), "job", "submit", "true", "-o", "json")
        self.assertOk(result)
        answer = parsed(result)
        self.assertEqual(list(answer), ["job_id", "created_at_ms"])
        uuid.UUID(answer["job_id"])
        self.assertTrue(result.stdout.startswith("{\n  "))  # pretty-printed

    async def test_submit_file_sends_one_batch_in_file_order(self):
        tag = marker()
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(f"echo {tag} 1\n\necho {tag} 2\necho {tag} 3\n")
        self.leader = await self.cluster.batching_leader()
        result, _args = await self.via_follower("-o", "json", "job", "submit", "--file", path)
        self.assertOk(result)
        jobs = parsed(result)["jobs"]
        self.assertEqual([list(job) for job in jobs], [["job_id", "created_at_ms"]] * 3)
        outputs = [(await wait_finished(self.leader, job["job_id"])).output for job in jobs]
        self.assertEqual(outputs, [f"{tag} {n}\n" for n in (1, 2, 3)])
        log = await self.leader.call("GetRaftLogEntries", pb.GetRaftLogEntriesRequest(limit=1000))
        batches = [
            [job.job_id for job in e.command.submit_jobs.jobs]
            for e in log.entries
            if e.command.HasField("submit_jobs")
        ]
        self.assertIn([job["job_id"] for job in jobs], batches)

    async def test_submit_file_from_stdin_and_a_bad_line_submits_nothing(self):
        tag = marker()
        result = await run_cli(
            *addr(self.leader), "job", "submit", "--file", "-", stdin_text=f"echo {tag}\n"
        )
        self.assertOk(result)
        self.assertEqual(result.stdout.splitlines()[0], "1 jobs submitted successfully!")
        job_id = result.stdout.splitlines()[1].removeprefix("Job ID: ")
        self.assertEqual((await wait_finished(self.leader, job_id)).output, f"{tag}\n")
        bad = await run_cli(
            *addr(self.leader),
            "job",
            "submit",
            "--file",
            "-",
            stdin_text=f"echo {tag} again\n{'x' * 1025}\n",
        )
        self.assertError(bad, "line 2: Command exceeds maximum allowed length")
        listed = await run_cli(
            *addr(self.leader), "-o", "json", "job", "list", "--command-substr", tag
        )
        self.assertEqual(parsed(listed)["total_count"], 1)

    async def test_submit_to_a_follower_redirects_to_the_leader(self):
        tag = marker()
        result, _args = await self.via_follower("job", "submit", f"echo {tag}")
        self.assertOk(result)
        job_id = result.stdout.splitlines()[1].removeprefix("Job ID: ")
        job = await wait_finished(self.cluster.nodes[1], job_id)
        self.assertEqual(job.output, f"{tag}\n")

    async def test_submit_wait_ends_with_the_jobs_exit_code(self):
        result = await run_cli(
            *addr(self.follower), "job", "submit", "--wait", "echo out; echo err >&2; exit 7"
        )
        self.assertEqual(result.returncode, 7, result)
        self.assertEqual(result.stdout, "out\n")  # only the job's own output
        self.assertIn("Job submitted successfully!", result.stderr)
        self.assertIn("err\n", result.stderr)
        self.assertIn("failed with exit code 7", result.stderr)

        result = await run_cli(
            *addr(self.leader), "-o", "json", "job", "submit", "exit 7", "--wait"
        )
        self.assertEqual(result.returncode, 7, result)
        answer = parsed(result)
        self.assertEqual(list(answer), STATUS_KEYS + STATUS_EXT_KEYS)
        self.assertEqual((answer["status"], answer["exit_code"]), ("FAILED", 7))

    async def test_submit_wait_on_a_job_that_times_out_exits_124(self):
        result = await run_cli(
            *addr(self.leader), "job", "submit", "--wait", "--timeout", "1", "sleep 30"
        )
        self.assertEqual(result.returncode, 124, result)
        self.assertIn("Timed out after 1s", result.stderr)
        self.assertIn("timed out", result.stderr.splitlines()[-1])

    async def test_cancel_in_both_formats_and_wait_on_a_cancelled_job_exits_125(self):
        async def cancel_a_new_job():
            return ("job", "cancel", await self.submit("sleep 60"))

        result, (_job, _cancel, first) = await self.via_follower(fresh_args=cancel_a_new_job)
        self.assertOk(result)
        second = await self.submit("sleep 60")
        self.assertEqual(result.stdout, f"job {first} cancelled\n")

        result = await run_cli(*addr(self.leader), "job", "cancel", second, "-o", "json")
        self.assertOk(result)
        self.assertEqual(parsed(result), {"success": True, "message": f"job {second} cancelled"})

        result = await run_cli(*addr(self.leader), "job", "wait", first)
        self.assertEqual(result.returncode, 125, result)
        self.assertIn("was cancelled", result.stderr)

        result = await run_cli(*addr(self.leader), "job", "cancel", first)
        self.assertError(result, "job is already cancelled")

    async def test_wait_gives_up_at_max_wait_with_3_and_the_job_goes_on(self):
        job_id = await self.submit("sleep 60")
        result = await run_cli(*addr(self.leader), "job", "wait", job_id, "--max-wait", "1")
        self.assertEqual(result.returncode, 3, result)
        self.assertIn("it goes on", result.stderr)
        self.assertIn(f"job wait {job_id}", result.stderr)
        status = await self.leader.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id))
        self.assertIn(status.status, (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING))
        self.assertOk(await run_cli(*addr(self.leader), "job", "cancel", job_id))

    async def test_wait_on_a_terminal_shows_a_spinner_and_ctrl_c_exits_130(self):
        job_id = await self.submit("sleep 60")
        run = TerminalRun(*addr(self.leader), "job", "wait", job_id)
        self.addCleanup(run.kill)
        self.assertTrue(await run.read_until(f"Waiting for job {job_id}"), run.shown)
        self.assertTrue(await run.read_until(", 1s)"), run.shown)  # the elapsed time runs
        run.process.send_signal(signal.SIGINT)
        code, stdout, shown = await run.finish()
        self.assertEqual(code, 130, shown)
        self.assertEqual(stdout, "")
        self.assertIn(f"job {job_id} goes on", shown)
        self.assertIn(f"job cancel {job_id}", shown)
        self.assertNotIn("Traceback", shown)
        status = await self.leader.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id))
        self.assertIn(status.status, (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING))
        self.assertOk(await run_cli(*addr(self.leader), "job", "cancel", job_id))

    async def test_status_of_an_unknown_job_exits_1(self):
        unknown = str(uuid.uuid4())
        for output in ("table", "json"):
            result = await run_cli(*addr(self.follower), "-o", output, "job", "status", unknown)
            self.assertError(result, "Job not found")
            self.assertEqual(result.stdout, "")

    async def test_list_pages_filters_and_formats(self):
        tag = marker()
        ids = [await self.submit(f"echo {tag} {n}") for n in range(3)]
        for job_id in ids:
            await self.finished_everywhere(job_id)
        query = ("job", "list", "--command-substr", tag.upper())  # any case

        page = parsed(await run_cli(*addr(self.follower), *query, "--page-size", "2", "-o", "json"))
        self.assertEqual(list(page), ["jobs", "total_count", "has_more"])
        self.assertEqual((page["total_count"], page["has_more"]), (3, True))
        self.assertEqual([job["job_id"] for job in page["jobs"]], ids[:2])
        self.assertEqual(
            list(page["jobs"][0]),
            ["job_id", "status", "command", "assigned_worker", "created_at_ms"],
        )

        everything = parsed(
            await run_cli(*addr(self.follower), *query, "--page-size", "2", "--all", "-o", "json")
        )
        self.assertEqual([job["job_id"] for job in everything["jobs"]], ids)
        self.assertEqual(everything["has_more"], False)

        table = await run_cli(*addr(self.follower), *query, "--page-size", "2")
        self.assertOk(table)
        lines = table.stdout.splitlines()
        self.assertRegex(lines[0], r"^JOB ID\s+STATUS\s+WORKER\s+COMMAND\s+CREATED$")
        created = r"(just now|\S+ ago)"  # "just now" within a second of the submit
        self.assertRegex(lines[1], rf"^{ids[0]}\s+COMPLETED\s+\d+\s+echo {tag} 0\s+{created}$")
        self.assertEqual(lines[-2:], ["Showing 2 of 3 jobs", "(Use --all to fetch all pages)"])

        completed = parsed(
            await run_cli(*addr(self.leader), *query, "--status", "Completed", "-o", "json")
        )
        self.assertEqual(completed["total_count"], 3)
        none = await run_cli(*addr(self.leader), *query, "--status", "FAILED")
        self.assertOk(none)
        self.assertEqual(none.stdout, "No jobs found.\n")

    async def test_list_stream_warns_about_ignored_filters(self):
        tag = marker()
        job_id = await self.submit(f"echo {tag}")
        await self.finished_everywhere(job_id)
        result = await run_cli(
            *addr(self.follower), "job", "list", "-s", "--status", "completed", "--worker", "1",
            "-o", "json",
        )  # fmt: skip
        self.assertOk(result)
        self.assertEqual(
            result.stderr.strip(),
            "Warning: --stream only supports --status; --worker, --command-substr, "
            "and time filters are ignored",
        )
        answer = parsed(result)
        self.assertIn(job_id, [job["job_id"] for job in answer["jobs"]])
        self.assertEqual({job["status"] for job in answer["jobs"]}, {"COMPLETED"})
        self.assertEqual(answer["total_count"], len(answer["jobs"]))
        self.assertEqual(answer["has_more"], False)

    async def test_list_with_an_unknown_status_exits_1_with_the_valid_values(self):
        result = await run_cli(*addr(self.follower), "job", "list", "--status", "bogus")
        self.assertError(result, f"Unknown status 'bogus'. {VALID_STATUSES}")

    async def test_wide_characters_list_aligned_and_cut_between_characters(self):
        tag = marker()
        commands = [
            f"echo {tag} 日本語のテキスト、とても長いコマンドです 한국어 中文字符 🚀🚀🚀 끝",
            f"echo {tag} 🚀 launch 👨‍👩‍👧 family 🇯🇵 flag e\u0301 accents and a long tail",
            f"echo {tag} ascii",
        ]
        ids = [await self.submit(command) for command in commands]
        for job_id in ids:
            await self.finished_everywhere(job_id)
        result = await run_cli(*addr(self.leader), "job", "list", "--command-substr", tag)
        self.assertOk(result)
        lines = result.stdout.splitlines()[:4]
        for line in lines:
            self.assertLessEqual(wcwidth.wcswidth(line), 120, line)  # COLUMNS=120

        def start(line: str, text: str) -> int:
            return wcwidth.wcswidth(line[: line.index(text)])

        def created_start(line: str) -> int:  # the last column, after two spaces
            return wcwidth.wcswidth(line.rsplit("  ", 1)[0]) + 2

        self.assertEqual(created_start(lines[0]), start(lines[0], "CREATED"))
        for line, job_id, text in zip(lines[1:], ids, commands, strict=True):
            self.assertTrue(line.startswith(job_id), line)
            self.assertRegex(line, r"(ago|just now)$")
            self.assertEqual(created_start(line), start(lines[0], "CREATED"), lines)
            self.assertEqual(start(line, "echo"), start(lines[0], "COMMAND"), lines)
            cell = line[line.index("echo") :].rsplit("  ", 1)[0].rstrip()
            if cell != text:
                self.assertTrue(cell.endswith("…"), cell)
                self.assertTrue(text.startswith(cell[:-1]), cell)
        self.assertIn("…", lines[1])

    async def test_logs_print_the_streams_in_both_formats(self):
        job_id = await self.submit("echo out; echo err >&2; exit 3")
        await self.finished_everywhere(job_id)
        result = await run_cli(*addr(self.follower), "job", "logs", job_id)
        self.assertOk(result)
        self.assertEqual((result.stdout, result.stderr), ("out\n", "err\n"))
        result = await run_cli(*addr(self.follower), "job", "logs", job_id, "--stdout-only")
        self.assertEqual((result.stdout, result.stderr), ("out\n", ""))
        result = await run_cli(*addr(self.follower), "job", "logs", job_id, "-o", "json")
        self.assertOk(result)
        self.assertEqual(
            [line for line in result.stdout.splitlines()],
            [
                '{"stream": "stdout", "data": "out\\n", "offset": 0}',
                '{"stream": "stderr", "data": "err\\n", "offset": 0}',
                '{"exit_code": 3, "status": "FAILED"}',
            ],
        )

    async def test_wait_json_on_a_finished_job(self):
        job_id = await self.submit("printf done")
        result = await run_cli(*addr(self.leader), "job", "wait", job_id, "-o", "json")
        self.assertOk(result)
        answer = parsed(result)
        self.assertEqual((answer["status"], answer["output"]), ("COMPLETED", "done"))


class ClusterCommandTests(CliTestCase):
    """cluster status / transfer-leader / drain and log list, in both output formats."""

    shared = SharedCluster()

    async def setUp(self):
        self.cluster = await self.shared.join(self)
        self.leader = await self.cluster.find_leader()

    async def test_cluster_status_in_both_formats(self):
        result = await run_cli(*addr(self.leader), "cluster", "status")
        self.assertOk(result)
        self.assertRegex(result.stdout, r"^Term:\s+\d+\nLeader:\s+node \d\n")
        for node in self.cluster.nodes.values():
            self.assertRegex(
                result.stdout, rf"\n\s*{node.node_id}  {node.grpc_address}\s+\w+\s+\[\+\] alive"
            )
        answer = parsed(await run_cli(*addr(self.leader), "cluster", "status", "-o", "json"))
        self.assertEqual(list(answer), ["current_term", "leader_id", "nodes"])
        self.assertEqual(answer["leader_id"], self.leader.node_id)
        self.assertEqual(
            answer["nodes"],
            [
                {"node_id": node.node_id, "address": node.grpc_address, "is_alive": True}
                for node in sorted(self.cluster.nodes.values(), key=lambda n: n.node_id)
            ],
        )

    async def test_transfer_leader_then_cluster_status_shows_the_new_leader(self):
        view = await self.cluster.view(self.leader.node_id)
        draining = {node["node_id"] for node in view["nodes"] if node["draining"]}
        target = next(
            node
            for node in self.cluster.nodes.values()
            if node is not self.leader and node.node_id not in draining
        )
        result = await run_cli(
            *addr(self.leader), "cluster", "transfer-leader", "--to", str(target.node_id)
        )
        self.assertOk(result)
        self.assertEqual(result.stdout, f"Leadership transferred to node {target.node_id}\n")
        await self.cluster.find_leader(among=[target.node_id])
        status = await run_cli(*addr(self.leader), "cluster", "status")
        self.assertRegex(status.stdout, rf"Leader:\s+node {target.node_id}\n")
        self.assertRegex(status.stdout, rf"\n\s*{target.node_id}  \S+\s+leader\s+\[\+\] alive")

        back = await run_cli(
            *addr(target),
            "cluster",
            "transfer-leader",
            "--to",
            str(self.leader.node_id),
            "-o",
            "json",
        )
        self.assertOk(back)
        self.assertEqual(
            parsed(back),
            {
                "success": True,
                "message": f"Leadership transferred to node {self.leader.node_id}",
                "new_leader_id": self.leader.node_id,
            },
        )
        answer = parsed(await run_cli(*addr(target), "-o", "json", "cluster", "status"))
        self.assertEqual(answer["leader_id"], self.leader.node_id)

    async def test_a_failed_transfer_exits_1_in_table_mode_and_0_in_json(self):
        result = await run_cli(*addr(self.leader), "cluster", "transfer-leader", "--to", "99")
        self.assertError(result, "Unknown target node 99")
        result = await run_cli(
            *addr(self.leader), "cluster", "transfer-leader", "--to", "99", "-o", "json"
        )
        self.assertOk(result)
        self.assertEqual(
            parsed(result),
            {"success": False, "message": "Unknown target node 99", "new_leader_id": None},
        )

    async def restart(self, node) -> None:
        """A fresh process for `node` (draining lasts until the node restarts)."""
        await node.stop()
        node.start()
        await node.until_ready()
        await self.cluster.find_leader()

    async def test_drain_a_follower(self):
        follower = next(n for n in self.cluster.nodes.values() if n is not self.leader)
        self.addCleanup(lambda: defer.ensureDeferred(self.restart(follower)))
        result = await run_cli(*addr(follower), "cluster", "drain")
        self.assertOk(result)
        self.assertEqual(result.stdout, "Node drained successfully\n")
        again = await run_cli(*addr(follower), "cluster", "drain", "-o", "json")
        self.assertOk(again)
        self.assertEqual(list(parsed(again)), ["success", "message"])

        async def shown_draining():
            status = await run_cli(*addr(self.leader), "cluster", "status")
            return f"{follower.node_id}  {follower.grpc_address}" in status.stdout and (
                "(draining)" in status.stdout
            )

        await wait_for(shown_draining, 30, "the drained node to show as draining")
        refused = await run_cli(*addr(follower), "job", "submit", "true")
        self.assertError(refused, "Node is draining and not accepting new jobs")

    async def test_log_list_shows_the_entry_types(self):
        submitted = await self.leader.call("SubmitJob", pb.SubmitJobRequest(command="true"))
        await wait_finished(self.leader, submitted.job_id)
        running = await self.leader.call("SubmitJob", pb.SubmitJobRequest(command="sleep 60"))
        await wait_status(self.leader, running.job_id, pb.JOB_STATUS_RUNNING)
        await self.leader.call("CancelJob", pb.CancelJobRequest(job_id=running.job_id))

        answer = parsed(
            await run_cli(*addr(self.leader), "log", "list", "--limit", "1000", "-o", "json")
        )
        self.assertEqual(
            list(answer), ["entries", "commit_index", "last_log_index", "first_available_index"]
        )
        entries = answer["entries"]
        self.assertEqual(
            list(entries[0]), ["index", "term", "command_type", "command_details", "is_committed"]
        )
        details = {(e["command_type"], e["command_details"]) for e in entries}
        self.assertIn(("SubmitJob", f"job_id={submitted.job_id}, cmd=true"), details)
        self.assertIn(("CancelJob", running.job_id), details)
        types = {e["command_type"] for e in entries}
        self.assertLessEqual({"Noop", "RegisterWorker", "BatchUpdateJobStatus"}, types)
        # A job submitted while a slot is free is assigned in its own SubmitJob entry;
        # the others get an AssignJob (one) or AssignJobs (a planning round) entry.
        for entry in entries:
            if entry["command_type"] == "AssignJob":
                self.assertRegex(entry["command_details"], r"^job_id=[0-9a-f-]{36}, worker_id=\d$")
        batch = [e for e in entries if e["command_type"] == "BatchUpdateJobStatus"]
        self.assertRegex(batch[0]["command_details"], r"^\d+ updates$")
        registered = [e for e in entries if e["command_type"] == "RegisterWorker"]
        self.assertRegex(registered[0]["command_details"], r"^worker_id=\d$")
        self.assertTrue(
            all(e["is_committed"] for e in entries if e["index"] <= answer["commit_index"])
        )

        table = await run_cli(
            *addr(self.leader), "log", "list", "--start-index", "2", "--limit", "1"
        )
        self.assertOk(table)
        lines = table.stdout.splitlines()
        self.assertRegex(lines[0], r"^INDEX\s+TERM\s+COMMITTED\s+TYPE\s+DETAILS$")
        self.assertRegex(lines[1], r"^\s*2\s+\d+\s+yes\s+\w+")
        self.assertEqual(lines[2], "")
        self.assertRegex(lines[3], r"^Commit index: \d+  Last log index: \d+$")


class ClientWithoutClusterTests(CliTestCase):
    """What needs no cluster: errors before or instead of a connection."""

    timeout = 120

    async def test_nothing_listening_is_one_error_line(self):
        for args in (("job", "status", str(uuid.uuid4())), ("cluster", "status", "-o", "json")):
            result = await run_cli("-a", "http://127.0.0.1:1", *args)
            self.assertEqual(result.returncode, 1, result)
            self.assertEqual(len(result.stderr.splitlines()), 1, result)
            self.assertTrue(
                result.stderr.startswith(
                    "Error: Cannot reach a jobsched node at http://127.0.0.1:1"
                ),
                result,
            )

    async def test_address_from_the_environment(self):
        result = await run_cli("job", "list", JOBSCHED_ADDR="http://127.0.0.1:1")
        self.assertIn("http://127.0.0.1:1", result.stderr)

    async def test_a_bad_address_is_a_usage_error(self):
        result = await run_cli("-a", "ftp://x:1", "cluster", "status")
        self.assertError(result, "Invalid address 'ftp://x:1': use http://HOST:PORT, or "
                         "https://HOST:PORT for TLS", exit_code=2)  # fmt: skip

    async def test_unknown_status_is_refused_before_connecting(self):
        result = await run_cli("-a", "http://127.0.0.1:1", "job", "list", "--status", "Nope")
        self.assertError(result, f"Unknown status 'Nope'. {VALID_STATUSES}")

    async def test_an_empty_command_is_refused_with_the_api_message(self):
        result = await run_cli("-a", "http://127.0.0.1:1", "job", "submit", "  ")
        self.assertError(result, "Command cannot be empty")

    async def test_version_help_and_usage(self):
        version = await run_cli("--version")
        self.assertOk(version)
        self.assertRegex(version.stdout, r"^jobsched \d+\.\d+\.\d+\n$")
        helped = await run_cli("--help")
        self.assertOk(helped)
        self.assertIn("cli.md", helped.stdout)
        usage = await run_cli("job", "frobnicate")
        self.assertEqual(usage.returncode, 2, usage)
        self.assertIn("invalid choice: 'frobnicate'", usage.stderr)
