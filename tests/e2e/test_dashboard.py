"""The dashboard in headless Chromium against real 3-node clusters.

Four clusters in all: one shared by the tests of DashboardTests, one with TLS and
tokens, one that loses its leader, one that starts with 10,000 finished jobs. Every
test ends by checking that the page's own code logged no error (failed requests a test
provokes are `network` entries and do not count). Screenshots of the main views: see
tests/browser.py screenshot_dir.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from twisted.internet import reactor
from twisted.trial import unittest

from jobsched.tokens import Role
from tests.browser import require_browser
from tests.e2e.dashboard_page import DashboardPage, SharedBrowser, SharedCluster
from tests.e2e.seeded_table import finished_jobs, write_data_dirs
from tests.nodeproc import Cluster, Node

JOB_SECONDS = 60  # a job's way through the cluster, on a busy machine
UI_SECONDS = 30  # the page showing what the cluster did
SEEDED_JOBS = 10_000


def unique_sleep() -> str:
    """A command of this test's own that runs far longer than any test waits."""
    return f"sleep 300.{uuid.uuid4().int % 10**6:06d}"


def record_figure(name: str, value: float, unit: str) -> None:
    """Append a measured figure to test-figures.jsonl in the run's scratch directory, or
    to $JOBSCHED_FIGURES."""
    with open(os.environ.get("JOBSCHED_FIGURES") or "test-figures.jsonl", "a") as figures:
        figures.write(json.dumps({"figure": name, "value": round(value, 3), "unit": unit}) + "\n")


class BrowserTestCase(unittest.TestCase):
    """Opens the dashboard of a node of the class's cluster in the class's browser."""

    cluster: SharedCluster
    browser: SharedBrowser
    nodes: Cluster | None = None

    async def shared(self):
        """The class's cluster and browser (asked for once per test)."""
        if self.nodes is None:
            require_browser()
            self.nodes = await self.cluster.get(self)
            self.chromium = await self.browser.get(self)
        return self.nodes, self.chromium

    async def page_on(self, node: Node | None = None, url: str | None = None) -> DashboardPage:
        """The dashboard of `node` (the leader by default), loaded and live."""
        nodes, browser = await self.shared()
        node = node or await nodes.find_leader()
        page = DashboardPage(browser, url or node.url + "/")
        await page.open()
        await browser.call(page.console_errors)  # what earlier pages logged is not ours
        await browser.call(page.script, "window.__sameDocument = true")
        return page

    async def a_follower(self) -> Node:
        nodes, _browser = await self.shared()
        leader = await nodes.find_leader()
        return next(node for node in nodes.nodes.values() if node is not leader)

    async def assert_clean(self, page: DashboardPage) -> None:
        """No reload happened and the page's own code logged no error."""
        self.assertTrue(await page.browser.call(page.script, "return window.__sameDocument"))
        self.assertEqual(await page.browser.call(page.console_errors), [])


class DashboardTests(BrowserTestCase):
    cluster = SharedCluster()
    browser = SharedBrowser()

    async def test_a_submitted_job_appears_and_completes_with_its_output(self):
        page = await self.page_on()
        await page.browser.call(page.submit, "echo hello")
        job_id = await page.until(
            lambda: page.job_id_for("echo hello"), UI_SECONDS, "the job's row"
        )
        await page.until(
            lambda: page.status_of(job_id) == "completed", JOB_SECONDS, "the job to complete"
        )
        await page.browser.call(page.open_job, job_id)
        await page.until(
            lambda: page.drawer()["output"] == "hello\n", UI_SECONDS, "the output in the drawer"
        )
        drawer = await page.browser.call(page.drawer)
        self.assertEqual((drawer["id"], drawer["status"]), (job_id, "completed"))
        await page.browser.call(page.browser.screenshot, "job")
        await page.browser.call(page.close_job)
        await self.some_traffic()
        await page.until(
            lambda: page.text("rate-finished") not in ("0", "0.0"), UI_SECONDS, "the chart"
        )
        await page.browser.call(page.browser.screenshot, "overview")
        await self.assert_clean(page)

    async def some_traffic(self):
        """A few jobs of each kind, for the overview screenshot."""
        leader = await self.nodes.find_leader()
        commands = [f"echo step {n}" for n in range(24)]
        commands += ["sleep 20", "sleep 25", "exit 3", "ls /nonexistent", "seq 1 5"]
        for command in commands:
            await leader.rest("POST", "/api/jobs", {"command": command, "timeout_seconds": 60})

    async def test_cancelling_a_running_job(self):
        page = await self.page_on()
        sleeper = unique_sleep()
        await page.browser.call(page.submit, sleeper, "600")
        job_id = await page.until(lambda: page.job_id_for(sleeper), UI_SECONDS, "the row")
        await page.until(lambda: page.status_of(job_id) == "running", JOB_SECONDS, "it to run")
        await page.browser.call(page.cancel, job_id)
        await page.until(
            lambda: page.status_of(job_id) == "cancelled", UI_SECONDS, "the job cancelled"
        )
        answer = await self.nodes.nodes[1].rest("GET", f"/api/jobs/{job_id}")
        self.assertEqual(answer.body["status"], "cancelled")
        await self.assert_clean(page)

    async def test_a_running_jobs_output_shows_while_it_runs(self):
        page = await self.page_on(await self.a_follower())
        leader = await self.nodes.find_leader()
        tag = uuid.uuid4().hex[:8]
        command = f"for i in $(seq 1 40); do echo {tag} $i; sleep 0.2; done"
        answer = await leader.rest("POST", "/api/jobs", {"command": command})
        job_id = answer.body["job_id"]
        await page.until(lambda: page.status_of(job_id) == "running", JOB_SECONDS, "it to run")
        await page.browser.call(page.open_job, job_id)

        def shown_while_running():
            drawer = page.drawer()
            lines = drawer["output"].splitlines()
            return drawer["status"] == "running" and f"{tag} 3" in lines

        await page.until(shown_while_running, UI_SECONDS, "lines in the drawer while it runs")
        job = (await leader.rest("GET", f"/api/jobs/{job_id}")).body
        self.assertEqual(job["status"], "running")  # shown live, not from the result
        expected = "".join(f"{tag} {i}\n" for i in range(1, 41))
        await page.until(
            lambda: page.drawer()["output"] == expected, JOB_SECONDS, "the whole output"
        )
        await page.browser.call(page.close_job)
        await self.assert_clean(page)

    async def test_a_followers_page_submits_and_cancels(self):
        page = await self.page_on(await self.a_follower())
        self.assertIn("follower", await page.browser.call(page.text, "served-by"))
        sleeper = unique_sleep()
        await page.browser.call(page.submit, sleeper, "600")
        job_id = await page.until(lambda: page.job_id_for(sleeper), UI_SECONDS, "the row")
        await page.until(lambda: page.status_of(job_id) == "running", JOB_SECONDS, "it to run")
        await page.browser.call(page.cancel, job_id)
        await page.until(
            lambda: page.status_of(job_id) == "cancelled", UI_SECONDS, "the job cancelled"
        )
        leader = await self.nodes.find_leader()
        self.assertEqual(
            (await leader.rest("GET", f"/api/jobs/{job_id}")).body["status"], "cancelled"
        )
        await self.assert_clean(page)

    async def test_markup_in_a_command_is_shown_as_text(self):
        markup = "<img src=x onerror=alert(1)>"
        page = await self.page_on()
        await page.browser.call(
            page.script, "window.__alerts = 0; window.alert = () => { window.__alerts += 1; }"
        )
        await page.browser.call(page.submit, markup)
        job_id = await page.until(lambda: page.job_id_for(markup), UI_SECONDS, "the row")
        await page.until(
            lambda: page.status_of(job_id) in ("completed", "failed"), JOB_SECONDS, "it to end"
        )
        await page.browser.call(page.open_job, job_id)
        await page.until(lambda: page.drawer()["command"] == markup, UI_SECONDS, "the drawer")
        injected = await page.browser.call(
            page.script,
            "return {images: document.querySelectorAll('img[src=\"x\"], [onerror]').length,"
            " alerts: window.__alerts}",
        )
        self.assertEqual(injected, {"images": 0, "alerts": 0})
        await page.browser.call(page.close_job)
        await self.assert_clean(page)  # an alert would have failed every selenium call

    async def test_the_csp_header_is_sent_and_the_page_keeps_to_it(self):
        page = await self.page_on()
        answer = await self.nodes.nodes[1].rest("GET", "/")
        policy = answer.headers["content-security-policy"]
        for directive in ("script-src 'self'", "style-src 'self'", "connect-src 'self'"):
            self.assertIn(directive, policy)
        self.assertNotIn("unsafe", policy)
        self.assertEqual(answer.headers["x-content-type-options"], "nosniff")
        await self.assert_clean(page)  # a violation is logged as a console error
        # ... as this inline script's is: the check above can see violations
        await page.browser.call(
            page.script,
            "const s = document.createElement('script'); s.textContent = 'window.x = 1';"
            " document.head.append(s)",
        )
        errors = await page.browser.call(page.console_errors)
        self.assertTrue(any("Content Security Policy" in e["message"] for e in errors), errors)

    async def test_validation_errors_show_under_the_field(self):
        page = await self.page_on()
        await page.browser.call(page.submit, "echo x", "99999")
        await page.until(
            lambda: (
                "timeout_seconds exceeds maximum"
                in page.script(
                    "return document.querySelector('[data-for=timeout_seconds]').textContent"
                )
            ),
            UI_SECONDS,
            "the timeout error under its field",
        )
        await page.browser.call(page.submit, "   ")
        await page.until(
            lambda: (
                page.script("return document.querySelector('[data-for=command]').textContent")
                == "Command cannot be empty"
            ),
            UI_SECONDS,
            "the command error under its field",
        )
        await page.browser.call(page.browser.screenshot, "validation")
        await self.assert_clean(page)

    async def test_leadership_moves_from_the_page(self):
        page = await self.page_on(await self.a_follower())
        before = await page.browser.call(page.leader_id)
        await page.browser.call(page.click, "#transfer-button")
        await page.browser.call(page.click, "#confirm-yes")
        await page.until(
            lambda: page.leader_id() not in (None, before), UI_SECONDS, "a new leader shown"
        )
        await page.browser.call(page.browser.screenshot, "cluster")
        await self.assert_clean(page)

    async def test_the_raft_log_pages(self):
        page = await self.page_on()
        leader = await self.nodes.find_leader()
        for n in range(20):
            await leader.rest("POST", "/api/jobs", {"command": f"true {n}"})
        await page.browser.call(page.click, "#log-latest")
        last = (await leader.rest("GET", "/api/raft/log?limit=1")).body["last_log_index"]
        await page.until(lambda: page.log_indexes()[0] >= last, UI_SECONDS, "the newest entries")
        shown = await page.browser.call(page.log_indexes)
        self.assertEqual(shown, list(range(shown[0], shown[0] - len(shown), -1)))
        await page.browser.call(page.click, "#log-older")
        await page.until(
            lambda: page.log_indexes()[0] == shown[-1] - 1, UI_SECONDS, "the page before"
        )
        await page.browser.call(page.click, "#log-latest")
        await page.until(lambda: page.log_indexes()[0] >= shown[0], UI_SECONDS, "the latest")
        await self.assert_clean(page)


class TokenTests(BrowserTestCase):
    """The page of a TLS cluster with tokens (--auth-token-file), over HTTPS."""

    cluster = SharedCluster(secure=True)
    browser = SharedBrowser(trusting=cluster)

    async def test_a_token_is_asked_once_and_sent_on_every_request(self):
        nodes, browser = await self.shared()
        follower = await self.a_follower()
        self.assertTrue(follower.url.startswith("https://"))
        self.addCleanup(browser.call, browser.driver.get, "about:blank")
        page = DashboardPage(browser, follower.url + "/")
        await browser.call(browser.driver.get, page.url)
        await self.answer_the_token_question(page, "not-a-token-of-this-cluster")
        await page.until(
            lambda: (
                "not accepted"
                in page.script("return document.getElementById('token-error').textContent")
            ),
            UI_SECONDS,
            "the refusal shown",
        )
        admin = self.cluster.tokens[Role.ADMIN]
        await self.answer_the_token_question(page, admin, clear=True)
        await page.until(page.ready, UI_SECONDS, "the page to be live with the token")
        self.assertFalse(
            await browser.call(page.script, "return document.getElementById('token-dialog').open")
        )
        self.assertEqual(
            await browser.call(page.script, "return sessionStorage.getItem('jobsched.token')"),
            admin,
        )
        await page.browser.call(page.submit, "echo behind a token")  # forwarded to the leader
        job_id = await page.until(
            lambda: page.job_id_for("echo behind a token"), UI_SECONDS, "the job's row"
        )
        await page.until(
            lambda: page.status_of(job_id) == "completed", JOB_SECONDS, "the job to complete"
        )
        self.assertEqual(await browser.call(page.console_errors), [])
        logs = "".join(node.log_text() for node in nodes.nodes.values())
        self.assertNotIn(admin, logs)

    async def answer_the_token_question(self, page, token: str, clear: bool = False) -> None:
        await page.until(
            lambda: page.script("return document.getElementById('token-dialog').open"),
            UI_SECONDS,
            "the token question",
        )
        field = await page.browser.call(page.driver.find_element, "id", "token-input")
        if clear:
            await page.browser.call(field.clear)
        await page.browser.call(field.send_keys, token)
        await page.browser.call(page.click, "#token-ok")


class LeaderLossTests(BrowserTestCase):
    cluster = SharedCluster()
    browser = SharedBrowser()

    async def test_the_page_shows_the_new_leader_when_the_leader_dies(self):
        nodes, _browser = await self.shared()
        old = await nodes.find_leader()
        for command in ("echo before", "seq 1 3", "sleep 60"):
            await old.rest("POST", "/api/jobs", {"command": command, "timeout_seconds": 90})
        page = await self.page_on(await self.a_follower())
        await page.until(lambda: page.leader_id() == old.node_id, UI_SECONDS, "the leader shown")
        started = time.monotonic()
        old.kill()
        await page.until(
            lambda: page.leader_id() not in (None, old.node_id), 90, "the new leader on the page"
        )
        record_figure(
            "dashboard: leader killed -> new leader shown", time.monotonic() - started, "s"
        )
        await page.until(
            lambda: (
                page.script(
                    "return document.querySelector(`#nodes li[data-node-id='${arguments[0]}']`)"
                    ".dataset.alive",
                    old.node_id,
                )
                == "false"
            ),
            UI_SECONDS,
            "the old leader shown as down",
        )
        await page.until(
            lambda: page.script("return document.querySelectorAll('#nodes li.down').length") == 1,
            UI_SECONDS,
            "the survivors shown alive",
        )
        await page.browser.call(page.browser.screenshot, "failover")
        await self.assert_clean(page)


async def _seed(workdir):
    snapshot, index = finished_jobs(SEEDED_JOBS)
    await write_data_dirs(workdir, (1, 2, 3), snapshot, index, reactor)


class LargeTableTests(BrowserTestCase):
    cluster = SharedCluster("--data-dir", "{workdir}/node{node_id}", prepare=_seed)
    browser = SharedBrowser()

    async def test_ten_thousand_finished_jobs_page_and_filter(self):
        page = await self.page_on()
        rendered = await page.browser.call(
            page.script,
            "return performance.getEntriesByName('jobsched:jobs-rendered')[0].startTime",
        )
        record_figure("dashboard: first render, 10,000 jobs, fresh browser", rendered / 1000, "s")
        self.assertEqual(await page.browser.call(page.page_label), "1-50 of 10,000")
        rows = await page.browser.call(page.rows)
        self.assertEqual(rows[0]["command"], f"echo seeded job {SEEDED_JOBS - 1}")
        self.assertEqual(len(rows), 50)
        await page.browser.call(page.click, "#page-older")
        await page.until(lambda: page.page_label() == "51-100 of 10,000", UI_SECONDS, "page 2")
        rows = await page.browser.call(page.rows)
        self.assertEqual(rows[0]["command"], f"echo seeded job {SEEDED_JOBS - 51}")
        await page.browser.call(page.click, "#page-newer")
        await page.until(lambda: page.page_label() == "1-50 of 10,000", UI_SECONDS, "page 1")
        await page.browser.call(page.filter_status, "failed")
        await page.until(lambda: page.page_label() == "1-50 of 1,000", UI_SECONDS, "failed ones")
        statuses = {row["status"] for row in await page.browser.call(page.rows)}
        self.assertEqual(statuses, {"failed"})
        await page.browser.call(page.filter_status, "")
        await page.until(lambda: page.page_label() == "1-50 of 10,000", UI_SECONDS, "all again")
        await page.browser.call(page.browser.screenshot, "paging")
        await self.assert_clean(page)
