"""Every zope.interface of jobsched: the seams between its parts.

Tests swap a part for another provider of the same interface (MemoryStorage for a
durable store, a fake executor, a simulated transport); nothing is patched.
"""

from zope.interface import Attribute, Interface


class IRaftStorage(Interface):
    """Where a node keeps its term, vote, log and latest snapshot.

    Writes return Deferreds that fire once the data is durable (at once for memory).
    Writes complete in the order they were called. A failed write errbacks.
    """

    def load():
        """Return a `jobsched.raft.storage.StoredState` (empty for a fresh store), or a
        Deferred firing with one. Called once, when the node starts."""

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

    def close():
        """Flush and release the store; returns a Deferred."""


class IRaftTransport(Interface):
    """Outbound Raft RPCs to peers."""

    def send(peer_id, request):
        """Send a request message (jobsched.raft.messages) to a peer.

        Returns a Deferred that fires with the response message, or errbacks when the
        peer cannot be reached in time. Never blocks the reactor.
        """


class IStateMachine(Interface):
    """The replicated state: changed only by applying committed entries, in order."""

    def apply(index, command):
        """Apply one committed `scheduler_pb2.Command` at log `index`; return the
        result handed to whoever proposed it. Deterministic: no clock, no I/O."""

    def snapshot():
        """Return the applied state as bytes."""

    def restore(data):
        """Replace the applied state with a snapshot made by `snapshot`."""


class IRaftService(Interface):
    """Consensus as the rest of the node sees it (runs on the reactor)."""

    node_id = Attribute("This node's id.")

    def propose(command):
        """Append `command` and return a Deferred firing with the state machine's
        apply result once it is committed and applied, or failing with a typed error
        from jobsched.api.errors (NotLeader, Overloaded, CommitTimeout,
        LeadershipLost, RaftStopped)."""

    def status():
        """Return a `jobsched.raft.service.RaftStatus` snapshot of this node's view."""

    def log_entries(start_index, limit):
        """Return up to `limit` LogEntry from `start_index` (still in the log)."""

    def peer_progress():
        """Return {peer_id: PeerProgress} as this node (if leader) knows it."""

    def add_observer(observer):
        """Register a callable(event: str) run on the reactor after role or leader
        changes ("role") and after committed entries were applied ("applied")."""

    def handle(request):
        """Answer an inbound Raft request message; returns a Deferred of the response
        (it may wait for a durable write before answering)."""


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


class IWorker(Interface):
    """A node's worker: runs the jobs the table assigns to this node, reports results."""

    incarnation = Attribute(
        "A random id of this worker's process life; assignments carry it, so a restarted "
        "worker recognises (and reports failed) the jobs of its earlier life."
    )

    def running_job_ids():
        """Ids of the jobs this worker runs now."""

    def free_slots():
        """How many more jobs this worker can take."""


class IScheduler(Interface):
    """The leader-side placement of pending jobs on live workers."""

    def plan(table, workers):
        """Return the AssignJob commands to propose now (pure, no side effects)."""


class IDispatcher(Interface):
    """The leader's loop that places pending jobs and tracks remote workers."""

    def heartbeat(node_id, running_job_ids, free_slots, draining, incarnation):
        """Record a remote worker's heartbeat (registers it the first time)."""

    def workers():
        """{worker_id: WorkerView} of the workers that may take jobs now."""

    def request_round(delay=0):
        """Plan assignments again soon."""


class IClusterAPI(Interface):
    """The operations the gRPC and REST APIs both offer, with typed errors."""

    def submit(command, image, timeout_seconds, idempotency_key, max_attempts):
        """Deferred[(job_id, created_at_ms)]."""

    def cancel(job_id):
        """Deferred[job_id] once the cancel is committed."""

    def get_job(job_id):
        """The Job or NotFound."""

    def list_jobs(query):
        """A page of jobs for a ListQuery."""

    def cluster_status():
        """Deferred[ClusterStatus]."""


class IWebApp(Interface):
    """The REST API and dashboard, served over HTTP by the node's web site."""

    def resource():
        """The twisted.web resource to serve."""


class IHeartbeatSender(Interface):
    """Keeps the leader informed that this node's worker is alive."""

    def beat():
        """Send one heartbeat now (if this node follows a known leader)."""


class IApiServer(Interface):
    """A network endpoint of a node (the gRPC server, the REST site)."""

    port = Attribute("The port it listens on once started.")
