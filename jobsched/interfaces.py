"""Every zope.interface of jobsched: the seams between its parts.

Consumers depend on these, not on the classes behind them; tests swap a part for
another provider of the same interface (MemoryStorage for a durable store, a fake
executor, a simulated transport); nothing is patched.
"""

from zope.interface import Attribute, Interface


class IRaftStorage(Interface):
    """Where a node keeps its term, vote, log and latest snapshot.

    Writes return Deferreds that fire once the data is durable (at once for memory).
    Writes complete in the order they were called. A failed write errbacks.
    """

    def load():
        """Open the store and return the `jobsched.raft.storage.StoredState` it holds
        (empty for a fresh store). Called once, when the node starts; raises
        `StorageError` (one line naming the file) for a damaged or foreign store."""

    def save_hard_state(term, voted_for):
        """Persist the current term and the vote cast in it (0 = none)."""

    def append(entries):
        """Persist `entries` (consecutive LogEntry); any stored entry at or after the
        first new index is deleted first (conflicting suffix)."""

    def truncate(from_index):
        """Delete every stored entry at or after `from_index` (a log a received
        snapshot disagrees with)."""

    def save_snapshot(index, term, data):
        """Persist a snapshot covering the log up to `index` and drop entries <= index."""

    def save_compaction(index, term, data):
        """As `save_snapshot`, for a snapshot of this node's own applied state: a store
        that was given every entry up to `index` may keep them instead, for now (what
        it loads rebuilds the same log), and write a snapshot later."""

    def close():
        """Flush and release the store; returns a Deferred."""


class IRaftTransport(Interface):
    """Outbound Raft RPCs to peers."""

    def send(peer_id, request):
        """Send a request message (jobsched.raft.messages) to a peer.

        Returns a Deferred that fires with the response message, or errbacks when the
        peer cannot be reached in time. Never blocks the reactor.
        """


class IPeerLinks(Interface):
    """AppendEntries to peers on their peer ports (outside gRPC)."""

    def learn_port(peer_id, port):
        """A peer's AppendEntries answer named its peer port (0: it has none)."""

    def serves(peer_id):
        """Whether AppendEntries to the peer go on its peer port now."""

    def send(peer_id, request, timeout):
        """Send a pb.AppendEntriesRequest; a Deferred of the pb.AppendEntriesResponse,
        or of a CallFailed when it cannot be answered in `timeout` seconds."""

    def take_results(handler):
        """Take followers' worker results on the connections from now on:
        `handler(caller, request)` (a net.access.Caller, a pb.ForwardJobStatusRequest)
        returns a Deferred that fires once they are committed, or raises a typed error."""

    def close():
        """Close every connection; requests waiting on them fail."""


class IPeerResults(Interface):
    """A follower's worker results to its leader on the leader's peer-port connection."""

    def send_results(request, timeout):
        """Deferred that fires once the leader committed the pb.ForwardJobStatusRequest
        (or fails with its typed error, or LeaderUnreachable); None when the current
        leader has no connection here that takes results."""


class IEventLoopUser(Interface):
    """Something that runs on the gRPC server's event loop while that loop runs."""

    def attach(loop):
        """The loop has started (called on the reactor thread)."""

    def detach():
        """The loop is about to stop: let go of it (a coroutine, run on the loop)."""


class IStateMachine(Interface):
    """The replicated state: changed only by applying committed entries, in order."""

    def apply(index, command):
        """Apply one committed entry's `command` (bytes, opaque to Raft) at log `index`;
        return the result handed to whoever proposed it. Deterministic: no clock, no
        I/O."""

    def snapshot():
        """Return the applied state as bytes."""

    def begin_snapshot():
        """An `ISnapshotBuild` of the applied state as it is now: the bytes `snapshot`
        returns now, which its steps put together while later entries apply."""

    def restore(data):
        """Replace the applied state with a snapshot made by `snapshot`."""

    def begin_restore(data):
        """An `ISnapshotRestore` of `data`: `restore` done in steps, the state unchanged
        until the step that completes it."""


class ISnapshotRestore(Interface):
    """A snapshot restored a slice at a time, so that a follower installing a large
    one costs no long pause of the reactor."""

    def step(limit):
        """Do about `limit` units of work (a unit: one job record read or loaded);
        return True once the state has been replaced, else False. ValueError, the
        state unchanged, if the data is not a snapshot."""


class ISnapshotBuild(Interface):
    """A snapshot put together a slice at a time, so that a large state costs no long
    pause of the reactor."""

    def step(limit):
        """Do about `limit` units of work (a unit: one job record encoded); return the
        snapshot's bytes once complete, else None."""


class IJobTable(IStateMachine):
    """The replicated job table and worker registry, and the reads the node makes."""

    def add_listener(listener):
        """Call `listener(event, job)` after each applied change (see JobTable)."""

    def get(job_id):
        """A copy of the job with this canonical id, or None."""

    def list_jobs(query):
        """A `JobPage` of the jobs matching a `ListQuery`, in creation order."""

    def render_page(query, key, render):
        """A `RenderedPage`: `list_jobs` with each job as `render(job)` (bytes),
        rendered once per version of the job and kept under `key`."""

    def render_all(query, key, render):
        """Every job matching the query's filters (no paging), rendered likewise."""

    def active_count():
        """Pending plus running jobs."""

    def count(status):
        """Jobs in `status`."""

    def pending_jobs(limit=None):
        """Pending jobs in submission order, at most `limit`."""

    def jobs_running_on(worker_id):
        """Running jobs assigned to `worker_id`."""

    def running_counts():
        """{worker id: running jobs}."""

    def running_by_worker():
        """{worker id: [running jobs]}."""

    def workers():
        """Registered worker ids, ascending."""

    def entry_forms():
        """The Raft entry forms the cluster writes (replicated; see jobs.commands)."""


class IRaftService(Interface):
    """Consensus as the rest of the node sees it (runs on the reactor)."""

    node_id = Attribute("This node's id.")
    last_applied = Attribute(
        "The index of the last entry applied to the state machine (cheaper than "
        "`status().last_applied`)."
    )

    def propose(command):
        """Append `command` (bytes) and return a Deferred firing with the state
        machine's apply result once it is committed and applied, or failing with a
        typed error of jobsched.errors (NotLeader, Overloaded, CommitTimeout,
        LeadershipLost, RaftStopped, StorageFailed)."""

    def is_leader():
        """Whether this node leads now (cheaper than `status().role`)."""

    def status():
        """Return a `jobsched.raft.service.RaftStatus` snapshot of this node's view."""

    def log_entries(start_index, limit):
        """Return up to `limit` LogEntry from `start_index` (still in the log)."""

    def peer_progress():
        """Return {peer_id: PeerProgress} as this node (if leader) knows it."""

    def refuse_leadership():
        """Never stand for election from now on (a draining node); still vote and
        follow."""

    def transfer_leadership(target_id=0, exclude=frozenset()):
        """Hand leadership to `target_id` (0 = the best live peer not in `exclude`); Deferred of
        (success, message, new_leader_id), success only once the target has won."""

    def add_observer(observer):
        """Register a callable(event: str) run on the reactor after role or leader
        changes ("role") and after committed entries were applied ("applied")."""

    def handle(request):
        """Answer an inbound Raft request message; returns a Deferred of the response
        (it may wait for a durable write before answering)."""

    def leader_disconnected(leader_id, term):
        """The connection on which `leader_id` of `term` sent its entries closed: a
        follower of that leader stands for election when its lease ends, not after its
        own random timeout (pre-vote keeps a leader that other peers still hear)."""


class IExecutor(Interface):
    """Runs one job attempt somewhere (a container, a process) off the reactor."""

    name = Attribute("`docker` or `process`.")

    def start():
        """Acquire resources (thread pool, engine connection); returns a Deferred."""

    def stop():
        """Kill what still runs and release resources; returns a Deferred."""

    def run(spec):
        """Run a `JobSpec`; Deferred firing with a `JobResult` (never errbacks for a
        job-level failure such as a non-zero exit, timeout or missing image)."""

    def cancel(job_id):
        """Kill the running attempt of `job_id`, if any; returns a Deferred."""

    def remove_leftovers():
        """Remove what a previous run of this node left (containers by label);
        Deferred firing with the list of job ids found."""


class IFence(Interface):
    """This node's lease on the jobs it runs, enforced by a keeper process outside the
    node: runs registered here are killed once the lease runs out or the node dies."""

    def extend_lease(until):
        """Jobs may run until `until` (seconds of the reactor's clock); never shortens."""

    def lease_expired():
        """True once the lease has run out (the worker must fence itself)."""

    def run_started(kind, target, label):
        """Register a run (`pgid` and a process group id, or `container` and a container
        name; `label` names the job in log lines); returns a token for run_ended."""

    def run_ended(token):
        """The run ended; if the lease had run out meanwhile, the keeper may have killed
        it, so the lease-lost listeners hear of it before the result is looked at."""


class IWorker(Interface):
    """A node's worker: runs the jobs the table assigns to this node, reports results."""

    incarnation = Attribute(
        "A random id of this worker's process life; assignments carry it, so a restarted "
        "worker recognises (and reports failed) the jobs of its earlier life."
    )

    def running_job_ids():
        """Ids of the jobs this worker runs now, and of finished ones whose results are
        not committed yet."""

    def free_slots():
        """How many more jobs this worker can take."""

    def fence():
        """Kill every running job: the leader has been out of reach too long."""

    def wind_down(grace_seconds):
        """Let running jobs finish for up to `grace_seconds`, then kill the rest;
        Deferred."""


class IScheduler(Interface):
    """The leader-side placement of pending jobs on live workers."""

    def plan(table, workers, now_ms, being_assigned=frozenset()):
        """Return the AssignJobCommands to propose now, stamped `now_ms`, for pending
        jobs other than `being_assigned` (pure, no side effects)."""

    def place(table, workers, count):
        """Worker ids for up to `count` jobs being submitted, first job first (pure)."""


class IDispatcher(Interface):
    """The leader's loop that places pending jobs and tracks remote workers."""

    def heartbeat(
        node_id, running_job_ids, free_slots, draining, incarnation, applied_index=0, entry_forms=0
    ):
        """Record a remote worker's heartbeat (registers it the first time); NotLeader
        on a node that does not lead."""

    def workers():
        """{worker_id: WorkerView} of the workers that may take jobs now."""

    def request_round(delay=0):
        """Plan assignments again soon."""


class IClusterAPI(Interface):
    """The operations both client APIs offer, answered by this node, with the typed
    errors of jobsched.errors. Runs on the reactor."""

    draining = Attribute("Whether this node drains (refuses new jobs).")

    def check_submission(request):
        """Validate a `SubmitRequest`; return it with the server defaults filled in."""

    def submit(request):
        """Deferred[Job] of the committed job (leader only)."""

    def check_batch(requests):
        """`check_submission` for each job of a batch; `job <i>: ...` names the first
        refused one."""

    def submit_many(requests):
        """Deferred[list[Job]] of a batch committed as one entry, in order (leader only)."""

    def cancel(job_id):
        """Deferred[canonical job id] once the cancel is committed (leader only)."""

    def accept_results(updates):
        """Deferred firing once finished attempts are committed (leader only)."""

    def transfer_leadership(target_node_id):
        """Deferred[(success, message, new_leader_id)]."""

    def drain(wait_seconds=60.0):
        """Deferred[(success, message)] of DrainNode."""

    def get_job(job_id, invalid_message="Invalid job ID"):
        """The Job (InvalidArgument, NotFound)."""

    def list_jobs(query):
        """A JobPage for a ListQuery."""

    def render_page(query, key, render):
        """A RenderedPage for a ListQuery (the job table's render_page)."""

    def render_all(query, key, render):
        """Every matching job, rendered (the job table's render_all)."""

    def job_counts():
        """{JobStatus: number of jobs}."""

    def cluster_view():
        """This node's ClusterView."""

    def raft_log_view(start_index, limit):
        """A LogView of this node's log."""

    def raft_status():
        """This node's RaftStatus."""

    def is_leader():
        """Whether this node leads now."""

    def is_ready():
        """A leader is known and this node is in touch with a quorum."""


class IRouter(Interface):
    """Decides, for every call that may need the leader, "here or at the leader"."""

    def submit(request):
        """Deferred[(job_id, status label)] for a `SubmitRequest`."""

    def submit_many(requests):
        """Deferred[list of job ids] of a batch of `SubmitRequest`s, in order."""

    def cancel(job_id):
        """Deferred[job_id] once the cancel is committed."""

    def cluster_status():
        """Deferred[ClusterView] of the leader."""

    def raft_log(start_index, limit):
        """Deferred[LogView] of the leader's log."""

    def transfer_leadership(target_node_id):
        """Deferred[(success, message, new_leader_id)], carried out by the leader."""

    def deliver_results(updates):
        """Deferred firing once this worker's finished attempts are committed."""

    def send_heartbeat(request, timeout):
        """Deferred firing once the leader took this worker's heartbeat."""

    def read_output(job_id, cursor, wait, relayed=False):
        """Deferred[OutputRead]: a job's output after `cursor`, read here or from the node
        running the job (never passed on when `relayed`), waiting up to `wait` seconds
        for something new."""


class ILeaderClient(Interface):
    """Calls to the leader this node currently knows (jobsched.net.leader)."""

    def scheduler(method, request, timeout=0):
        """Deferred of SchedulerService.`method` answered by the leader; its errors come
        back as typed errors (NoLeader when none is known, LeaderUnreachable)."""

    def internal(method, request, timeout=0):
        """Deferred of InternalService.`method` answered by the leader."""

    def close():
        """Close the channels."""


class IPeerClient(Interface):
    """Calls to another cluster member by node id (jobsched.net.peers)."""

    def knows(node_id):
        """Whether `node_id` is a configured peer."""

    def internal(node_id, method, request, timeout):
        """Deferred of InternalService.`method` answered by peer `node_id` (CallFailed
        when it could not be had)."""

    def close():
        """Close the channels."""


class IWebApp(Interface):
    """The REST API and dashboard, served over HTTP by the node's web site."""

    def resource():
        """The twisted.web resource to serve."""


class IEventHub(Interface):
    """Tells open event streams (GET /api/events) about job and cluster changes."""

    stream_count = Attribute("How many streams are open.")

    def open(request, last_event_id):
        """Start a stream on an HTTP request; Deferred firing when it ends. Raises
        Overloaded when too many are open."""


class IHeartbeatSender(Interface):
    """Keeps the leader informed that this node's worker is alive."""

    def beat():
        """Send one heartbeat now (if this node follows a known leader)."""


class IApiServer(Interface):
    """A network endpoint of a node (the gRPC server, the peer port)."""

    port = Attribute("The port it listens on once started.")
