"""The dashboard as the browser tests see it: a page object over selenium, and the
clusters and browsers a test class shares.

Page-object methods block (selenium); tests call them through `Browser.call` or wait on
them with `DashboardPage.until`, which polls them from a thread with a deadline.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from twisted.internet import threads

from jobsched.tokens import Role
from tests.browser import Browser
from tests.nodeproc import ClassShared, Cluster, NodeFactory, wait_for
from tests.pki import Pki, new_tokens, write_token_file

PAGE_READY_SECONDS = 60


class SharedCluster:
    """A 3-node cluster (process executor) for one test class; its nodes are killed by
    PID after the class's last test. `prepare(workdir)` may write the nodes' data
    directories before they start. With `secure`, the nodes run with TLS and tokens
    (`tokens`, one per role; the tests' own client uses the admin one) and
    `certificates` lists their certificate files."""

    def __init__(
        self,
        *extra_args: str,
        prepare: Callable[[Path], Awaitable] | None = None,
        secure: bool = False,
    ):
        self._extra_args = extra_args
        self._prepare = prepare
        self._secure = secure
        self._factory: NodeFactory | None = None
        self._shared = ClassShared(self._start, self._stop)
        self.tokens: dict[Role, str] = {}
        self.certificates: list[Path] = []

    async def _start(self) -> Cluster:
        workdir = Path(tempfile.mkdtemp(prefix="jobsched-dashboard-"))
        if self._prepare is not None:
            await self._prepare(workdir)
        args = [arg.replace("{workdir}", str(workdir)) for arg in self._extra_args]
        credentials = None
        if self._secure:
            pki = Pki(workdir / "pki").nodes(1, 2, 3)
            self.certificates = [pki.node(node_id)[0] for node_id in (1, 2, 3)]
            self.tokens = new_tokens()
            token_file = write_token_file(workdir / "tokens", self.tokens)
            args += [*pki.node_args(), "--auth-token-file", str(token_file)]
            credentials = pki.client(token=self.tokens[Role.ADMIN])
        self._factory = NodeFactory(workdir, credentials=credentials)
        return Cluster(self._factory, 3, *args)

    def _stop(self, _cluster: Cluster) -> None:
        self._factory.kill_all_and_remove()

    async def get(self, testcase) -> Cluster:
        """The cluster, with every node's HTTP client attached to `testcase`."""
        cluster = await self._shared.get(testcase)
        for node in cluster.nodes.values():
            node.attach(testcase)
        await cluster.until_all_live()
        await cluster.find_leader()
        return cluster


class SharedBrowser:
    """One headless Chromium for a test class; `trusting` (a SharedCluster with TLS)
    names the certificates it accepts for HTTPS, asked when the browser starts."""

    def __init__(self, trusting: SharedCluster | None = None) -> None:
        def start():
            trusted = trusting.certificates if trusting is not None else []
            return Browser.start(trusted)

        self._shared = ClassShared(start, lambda browser: browser.quit())

    async def get(self, testcase) -> Browser:
        return await self._shared.get(testcase)


class DashboardPage:
    """The dashboard at `url` in `browser`."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        self.driver = browser.driver
        self.url = url

    # ------------------------------------------------------------------ waiting

    async def until(self, check: Callable[[], object], timeout: float, what: str, interval=0.1):
        """Poll `check` (blocking selenium calls) from a thread until it is truthy."""
        return await wait_for(lambda: threads.deferToThread(check), timeout, what, interval)

    async def open(self) -> None:
        """Load the page and wait until it is live and shows the jobs."""
        await self.browser.call(self.driver.get, self.url)
        await self.until(self.ready, PAGE_READY_SECONDS, "the dashboard to be live")

    def ready(self) -> bool:
        return self.script(
            "return document.getElementById('live').dataset.state === 'live'"
            " && performance.getEntriesByName('jobsched:jobs-rendered').length > 0"
            " && document.querySelectorAll('#nodes li').length > 0"
        )

    # ------------------------------------------------------------------ reading

    def script(self, source: str, *args):
        return self.driver.execute_script(source, *args)

    def rows(self) -> list[dict]:
        """The job rows shown, top to bottom."""
        return self.script(
            "return [...document.querySelectorAll('#jobs-body tr')].map(tr => ({"
            " id: tr.dataset.jobId, status: tr.dataset.status,"
            " command: tr.querySelector('.c-command').textContent}))"
        )

    def job_id_for(self, command: str) -> str | None:
        ids = [row["id"] for row in self.rows() if row["command"] == command]
        return ids[0] if ids else None

    def status_of(self, job_id: str) -> str | None:
        return self.script(
            "const tr = document.querySelector(`#jobs-body tr[data-job-id='${arguments[0]}']`);"
            "return tr ? tr.dataset.status : null",
            job_id,
        )

    def leader_id(self) -> int | None:
        node = self.script(
            "const li = document.querySelector('#nodes li.leader');"
            "return li ? li.dataset.nodeId : null"
        )
        return int(node) if node else None

    def log_indexes(self) -> list[int]:
        """The Raft log entries shown, top (newest) to bottom."""
        return self.script(
            "return [...document.querySelectorAll('#log-body tr')]"
            ".map(tr => Number(tr.dataset.index))"
        )

    def text(self, element_id: str) -> str:
        return self.script("return document.getElementById(arguments[0]).textContent", element_id)

    def drawer(self) -> dict:
        return self.script(
            "const d = document.getElementById('job-dialog');"
            "return {open: d.open, id: document.getElementById('job-title').textContent,"
            " status: document.getElementById('job-status').textContent,"
            " command: document.getElementById('job-command').textContent,"
            " output: document.getElementById('job-output').textContent}"
        )

    def page_label(self) -> str:
        """The pager's "1-50 of 10,000" (with a plain hyphen)."""
        return self.text("page-label").replace("\u2013", "-")

    def field_error(self, name: str) -> str:
        return self.script(
            "return document.querySelector(`.field-error[data-for='${arguments[0]}']`).textContent",
            name,
        )

    def console_errors(self) -> list[dict]:
        """Errors in the console since the last call, other than failed requests
        (`network` entries: a request a test provokes on purpose may fail)."""
        return [
            entry
            for entry in self.browser.console()
            if entry["level"] == "SEVERE" and entry.get("source") != "network"
        ]

    # ------------------------------------------------------------------ acting

    def click(self, css: str) -> None:
        self.driver.find_element("css selector", css).click()

    def submit(self, command: str, timeout: str = "", attempts: str = "") -> None:
        form = {"f-command": command, "f-timeout": timeout, "f-attempts": attempts}
        for element_id, value in form.items():
            field = self.driver.find_element("id", element_id)
            field.clear()
            if value:
                field.send_keys(value)
        self.click("#submit-button")

    def cancel(self, job_id: str) -> None:
        self.click(f"#jobs-body tr[data-job-id='{job_id}'] button[data-cancel]")
        self.click("#confirm-yes")

    def open_job(self, job_id: str) -> None:
        self.click(f"#jobs-body tr[data-job-id='{job_id}'] td.c-command")

    def close_job(self) -> None:
        self.click("#job-close")

    def filter_status(self, status: str) -> None:
        from selenium.webdriver.support.select import Select

        Select(self.driver.find_element("id", "filter-status")).select_by_value(status)
