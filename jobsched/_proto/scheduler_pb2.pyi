from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus

class SubmitJobRequest(_message.Message):
    __slots__ = ("command", "image", "timeout_seconds", "idempotency_key", "max_attempts")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    command: str
    image: str
    timeout_seconds: int
    idempotency_key: str
    max_attempts: int
    def __init__(self, command: _Optional[str] = ..., image: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job_id", "created_at_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    created_at_ms: int
    def __init__(self, job_id: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class SubmitJobsRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobRequest, _Mapping]]] = ...) -> None: ...

class SubmitJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobResponse]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobResponse, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetJobStatusRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobStatusResponse(_message.Message):
    __slots__ = ("job_id", "status", "output", "error", "assigned_worker", "executed_by", "exit_code", "created_at_ms", "completed_at_ms", "command", "image", "timeout_seconds", "attempts", "output_truncated", "started_at_ms", "attempt_history")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_WORKER_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_BY_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    output: str
    error: str
    assigned_worker: int
    executed_by: int
    exit_code: int
    created_at_ms: int
    completed_at_ms: int
    command: str
    image: str
    timeout_seconds: int
    attempts: int
    output_truncated: bool
    started_at_ms: int
    attempt_history: _containers.RepeatedCompositeFieldContainer[AttemptRecord]
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., assigned_worker: _Optional[int] = ..., executed_by: _Optional[int] = ..., exit_code: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., completed_at_ms: _Optional[int] = ..., command: _Optional[str] = ..., image: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., attempts: _Optional[int] = ..., output_truncated: _Optional[bool] = ..., started_at_ms: _Optional[int] = ..., attempt_history: _Optional[_Iterable[_Union[AttemptRecord, _Mapping]]] = ...) -> None: ...

class AttemptRecord(_message.Message):
    __slots__ = ("attempt", "worker", "started_at_ms", "finished_at_ms", "outcome", "late")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    worker: int
    started_at_ms: int
    finished_at_ms: int
    outcome: str
    late: bool
    def __init__(self, attempt: _Optional[int] = ..., worker: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., outcome: _Optional[str] = ..., late: _Optional[bool] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status_filter", "worker_id_filter", "command_filter", "created_after_ms", "created_before_ms")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FILTER_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FILTER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FILTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status_filter: JobStatus
    worker_id_filter: int
    command_filter: str
    created_after_ms: int
    created_before_ms: int
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status_filter: _Optional[_Union[JobStatus, str]] = ..., worker_id_filter: _Optional[int] = ..., command_filter: _Optional[str] = ..., created_after_ms: _Optional[int] = ..., created_before_ms: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "total_count")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    next_page_token: str
    total_count: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class StreamJobsRequest(_message.Message):
    __slots__ = ("status_filter",)
    STATUS_FILTER_FIELD_NUMBER: _ClassVar[int]
    status_filter: JobStatus
    def __init__(self, status_filter: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "command", "status", "assigned_worker", "created_at_ms", "completed_at_ms", "image", "executed_by", "exit_code")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_WORKER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_BY_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    command: str
    status: JobStatus
    assigned_worker: int
    created_at_ms: int
    completed_at_ms: int
    image: str
    executed_by: int
    exit_code: int
    def __init__(self, job_id: _Optional[str] = ..., command: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., assigned_worker: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., completed_at_ms: _Optional[int] = ..., image: _Optional[str] = ..., executed_by: _Optional[int] = ..., exit_code: _Optional[int] = ...) -> None: ...

class StreamJobOutputRequest(_message.Message):
    __slots__ = ("job_id", "follow", "stdout_offset", "stderr_offset", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STDERR_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    follow: bool
    stdout_offset: int
    stderr_offset: int
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., follow: _Optional[bool] = ..., stdout_offset: _Optional[int] = ..., stderr_offset: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class JobOutputChunk(_message.Message):
    __slots__ = ("stream", "data", "offset", "final", "status", "exit_code", "skipped", "attempt")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    stream: str
    data: bytes
    offset: int
    final: bool
    status: JobStatus
    exit_code: int
    skipped: int
    attempt: int
    def __init__(self, stream: _Optional[str] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ..., final: _Optional[bool] = ..., status: _Optional[_Union[JobStatus, str]] = ..., exit_code: _Optional[int] = ..., skipped: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterStatusResponse(_message.Message):
    __slots__ = ("current_term", "leader_id", "nodes", "entry_forms")
    CURRENT_TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FORMS_FIELD_NUMBER: _ClassVar[int]
    current_term: int
    leader_id: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    entry_forms: int
    def __init__(self, current_term: _Optional[int] = ..., leader_id: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., entry_forms: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "address", "is_alive", "role", "match_index", "draining", "entry_forms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IS_ALIVE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FORMS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    is_alive: bool
    role: str
    match_index: int
    draining: bool
    entry_forms: int
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., is_alive: _Optional[bool] = ..., role: _Optional[str] = ..., match_index: _Optional[int] = ..., draining: _Optional[bool] = ..., entry_forms: _Optional[int] = ...) -> None: ...

class GetRaftLogEntriesRequest(_message.Message):
    __slots__ = ("start_index", "limit")
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    start_index: int
    limit: int
    def __init__(self, start_index: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetRaftLogEntriesResponse(_message.Message):
    __slots__ = ("entries", "commit_index", "last_log_index", "first_available_index")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_AVAILABLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[RaftLogEntryInfo]
    commit_index: int
    last_log_index: int
    first_available_index: int
    def __init__(self, entries: _Optional[_Iterable[_Union[RaftLogEntryInfo, _Mapping]]] = ..., commit_index: _Optional[int] = ..., last_log_index: _Optional[int] = ..., first_available_index: _Optional[int] = ...) -> None: ...

class RaftLogEntryInfo(_message.Message):
    __slots__ = ("index", "term", "command", "is_committed")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    IS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    command: Command
    is_committed: bool
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., is_committed: _Optional[bool] = ...) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ("target_node_id",)
    TARGET_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    target_node_id: int
    def __init__(self, target_node_id: _Optional[int] = ...) -> None: ...

class TransferLeadershipResponse(_message.Message):
    __slots__ = ("success", "message", "new_leader_id")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEW_LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    new_leader_id: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., new_leader_id: _Optional[int] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainNodeResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ReadJobOutputRequest(_message.Message):
    __slots__ = ("job_id", "attempt", "stdout_offset", "stderr_offset", "live_done", "wait_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STDERR_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIVE_DONE_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    stdout_offset: int
    stderr_offset: int
    live_done: bool
    wait_ms: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., stdout_offset: _Optional[int] = ..., stderr_offset: _Optional[int] = ..., live_done: _Optional[bool] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class ReadJobOutputResponse(_message.Message):
    __slots__ = ("chunks", "attempt", "stdout_offset", "stderr_offset", "live_done", "status", "exit_code")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STDERR_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIVE_DONE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[JobOutputChunk]
    attempt: int
    stdout_offset: int
    stderr_offset: int
    live_done: bool
    status: JobStatus
    exit_code: int
    def __init__(self, chunks: _Optional[_Iterable[_Union[JobOutputChunk, _Mapping]]] = ..., attempt: _Optional[int] = ..., stdout_offset: _Optional[int] = ..., stderr_offset: _Optional[int] = ..., live_done: _Optional[bool] = ..., status: _Optional[_Union[JobStatus, str]] = ..., exit_code: _Optional[int] = ...) -> None: ...

class GetJobOutputRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobOutputResponse(_message.Message):
    __slots__ = ("job_id", "output", "error", "found")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    output: str
    error: str
    found: bool
    def __init__(self, job_id: _Optional[str] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., found: _Optional[bool] = ...) -> None: ...

class WorkerHeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "running_job_ids", "free_slots", "draining", "incarnation", "applied_index", "entry_forms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FORMS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    running_job_ids: _containers.RepeatedScalarFieldContainer[str]
    free_slots: int
    draining: bool
    incarnation: int
    applied_index: int
    entry_forms: int
    def __init__(self, node_id: _Optional[int] = ..., running_job_ids: _Optional[_Iterable[str]] = ..., free_slots: _Optional[int] = ..., draining: _Optional[bool] = ..., incarnation: _Optional[int] = ..., applied_index: _Optional[int] = ..., entry_forms: _Optional[int] = ...) -> None: ...

class WorkerHeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardJobStatusRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[UpdateJobStatusCommand]
    def __init__(self, updates: _Optional[_Iterable[_Union[UpdateJobStatusCommand, _Mapping]]] = ...) -> None: ...

class ForwardJobStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerFrame(_message.Message):
    __slots__ = ("call_id", "results", "accepted", "error_code", "error_message")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    results: ForwardJobStatusRequest
    accepted: bool
    error_code: str
    error_message: str
    def __init__(self, call_id: _Optional[int] = ..., results: _Optional[_Union[ForwardJobStatusRequest, _Mapping]] = ..., accepted: _Optional[bool] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("term", "candidate_id", "last_log_index", "last_log_term", "pre_vote")
    TERM_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    term: int
    candidate_id: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool
    def __init__(self, term: _Optional[int] = ..., candidate_id: _Optional[int] = ..., last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("term", "vote_granted")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote_granted: bool
    def __init__(self, term: _Optional[int] = ..., vote_granted: _Optional[bool] = ...) -> None: ...

class AppendEntriesRequest(_message.Message):
    __slots__ = ("term", "leader_id", "prev_log_index", "prev_log_term", "entries", "leader_commit", "to_node_id", "takes_results", "retain_from")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TAKES_RESULTS_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FROM_FIELD_NUMBER: _ClassVar[int]
    term: int
    leader_id: int
    prev_log_index: int
    prev_log_term: int
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    leader_commit: int
    to_node_id: int
    takes_results: bool
    retain_from: int
    def __init__(self, term: _Optional[int] = ..., leader_id: _Optional[int] = ..., prev_log_index: _Optional[int] = ..., prev_log_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., leader_commit: _Optional[int] = ..., to_node_id: _Optional[int] = ..., takes_results: _Optional[bool] = ..., retain_from: _Optional[int] = ...) -> None: ...

class AppendEntriesResponse(_message.Message):
    __slots__ = ("term", "success", "match_index", "peer_port")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    PEER_PORT_FIELD_NUMBER: _ClassVar[int]
    term: int
    success: bool
    match_index: int
    peer_port: int
    def __init__(self, term: _Optional[int] = ..., success: _Optional[bool] = ..., match_index: _Optional[int] = ..., peer_port: _Optional[int] = ...) -> None: ...

class TimeoutNowRequest(_message.Message):
    __slots__ = ("term", "leader_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    leader_id: int
    def __init__(self, term: _Optional[int] = ..., leader_id: _Optional[int] = ...) -> None: ...

class TimeoutNowResponse(_message.Message):
    __slots__ = ("term", "success")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    term: int
    success: bool
    def __init__(self, term: _Optional[int] = ..., success: _Optional[bool] = ...) -> None: ...

class InstallSnapshotRequest(_message.Message):
    __slots__ = ("term", "leader_id", "last_included_index", "last_included_term", "jobs", "workers", "offset", "data", "done")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_INCLUDED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INCLUDED_TERM_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    term: int
    leader_id: int
    last_included_index: int
    last_included_term: int
    jobs: _containers.RepeatedCompositeFieldContainer[SnapshotJob]
    workers: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: bytes
    done: bool
    def __init__(self, term: _Optional[int] = ..., leader_id: _Optional[int] = ..., last_included_index: _Optional[int] = ..., last_included_term: _Optional[int] = ..., jobs: _Optional[_Iterable[_Union[SnapshotJob, _Mapping]]] = ..., workers: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., done: _Optional[bool] = ...) -> None: ...

class InstallSnapshotResponse(_message.Message):
    __slots__ = ("term",)
    TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    def __init__(self, term: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("term", "index", "command")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    command: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., command: _Optional[bytes] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("submit_job", "update_job_status", "register_worker", "batch_update_job_status", "assign_job", "cancel_job", "requeue_job", "submit_jobs", "assign_jobs", "entry_forms")
    SUBMIT_JOB_FIELD_NUMBER: _ClassVar[int]
    UPDATE_JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_WORKER_FIELD_NUMBER: _ClassVar[int]
    BATCH_UPDATE_JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_JOB_FIELD_NUMBER: _ClassVar[int]
    CANCEL_JOB_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_JOB_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_JOBS_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_JOBS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FORMS_FIELD_NUMBER: _ClassVar[int]
    submit_job: SubmitJobCommand
    update_job_status: UpdateJobStatusCommand
    register_worker: RegisterWorkerCommand
    batch_update_job_status: BatchUpdateJobStatusCommand
    assign_job: AssignJobCommand
    cancel_job: CancelJobCommand
    requeue_job: RequeueJobCommand
    submit_jobs: SubmitJobsCommand
    assign_jobs: AssignJobsCommand
    entry_forms: EntryFormsCommand
    def __init__(self, submit_job: _Optional[_Union[SubmitJobCommand, _Mapping]] = ..., update_job_status: _Optional[_Union[UpdateJobStatusCommand, _Mapping]] = ..., register_worker: _Optional[_Union[RegisterWorkerCommand, _Mapping]] = ..., batch_update_job_status: _Optional[_Union[BatchUpdateJobStatusCommand, _Mapping]] = ..., assign_job: _Optional[_Union[AssignJobCommand, _Mapping]] = ..., cancel_job: _Optional[_Union[CancelJobCommand, _Mapping]] = ..., requeue_job: _Optional[_Union[RequeueJobCommand, _Mapping]] = ..., submit_jobs: _Optional[_Union[SubmitJobsCommand, _Mapping]] = ..., assign_jobs: _Optional[_Union[AssignJobsCommand, _Mapping]] = ..., entry_forms: _Optional[_Union[EntryFormsCommand, _Mapping]] = ...) -> None: ...

class EntryFormsCommand(_message.Message):
    __slots__ = ("forms",)
    FORMS_FIELD_NUMBER: _ClassVar[int]
    forms: int
    def __init__(self, forms: _Optional[int] = ...) -> None: ...

class AssignJobsCommand(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[AssignJobCommand]
    def __init__(self, assignments: _Optional[_Iterable[_Union[AssignJobCommand, _Mapping]]] = ...) -> None: ...

class SubmitJobsCommand(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobCommand]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobCommand, _Mapping]]] = ...) -> None: ...

class SubmitJobCommand(_message.Message):
    __slots__ = ("job_id", "command", "created_at_ms", "image", "timeout_seconds", "idempotency_key", "max_attempts", "assignment")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    command: str
    created_at_ms: int
    image: str
    timeout_seconds: int
    idempotency_key: str
    max_attempts: int
    assignment: AssignJobCommand
    def __init__(self, job_id: _Optional[str] = ..., command: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., image: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., max_attempts: _Optional[int] = ..., assignment: _Optional[_Union[AssignJobCommand, _Mapping]] = ...) -> None: ...

class UpdateJobStatusCommand(_message.Message):
    __slots__ = ("job_id", "status", "executed_by", "exit_code", "completed_at_ms", "output", "error", "output_truncated", "started_at_ms", "attempt", "timed_out")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_BY_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    executed_by: int
    exit_code: int
    completed_at_ms: int
    output: str
    error: str
    output_truncated: bool
    started_at_ms: int
    attempt: int
    timed_out: bool
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., executed_by: _Optional[int] = ..., exit_code: _Optional[int] = ..., completed_at_ms: _Optional[int] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., started_at_ms: _Optional[int] = ..., attempt: _Optional[int] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class JobStatusUpdate(_message.Message):
    __slots__ = ("job_id", "status", "executed_by", "exit_code", "completed_at_ms", "output", "error", "output_truncated", "started_at_ms", "attempt", "timed_out")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_BY_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    executed_by: int
    exit_code: int
    completed_at_ms: int
    output: str
    error: str
    output_truncated: bool
    started_at_ms: int
    attempt: int
    timed_out: bool
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., executed_by: _Optional[int] = ..., exit_code: _Optional[int] = ..., completed_at_ms: _Optional[int] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., started_at_ms: _Optional[int] = ..., attempt: _Optional[int] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class BatchUpdateJobStatusCommand(_message.Message):
    __slots__ = ("updates", "assignments")
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[JobStatusUpdate]
    assignments: _containers.RepeatedCompositeFieldContainer[AssignJobCommand]
    def __init__(self, updates: _Optional[_Iterable[_Union[JobStatusUpdate, _Mapping]]] = ..., assignments: _Optional[_Iterable[_Union[AssignJobCommand, _Mapping]]] = ...) -> None: ...

class RegisterWorkerCommand(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    def __init__(self, worker_id: _Optional[int] = ...) -> None: ...

class AssignJobCommand(_message.Message):
    __slots__ = ("job_id", "worker_id", "attempt", "worker_incarnation", "assigned_at_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    worker_id: int
    attempt: int
    worker_incarnation: int
    assigned_at_ms: int
    def __init__(self, job_id: _Optional[str] = ..., worker_id: _Optional[int] = ..., attempt: _Optional[int] = ..., worker_incarnation: _Optional[int] = ..., assigned_at_ms: _Optional[int] = ...) -> None: ...

class CancelJobCommand(_message.Message):
    __slots__ = ("job_id", "cancelled_at_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    cancelled_at_ms: int
    def __init__(self, job_id: _Optional[str] = ..., cancelled_at_ms: _Optional[int] = ...) -> None: ...

class RequeueJobCommand(_message.Message):
    __slots__ = ("job_id", "attempt", "error", "failed_at_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    error: str
    failed_at_ms: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., error: _Optional[str] = ..., failed_at_ms: _Optional[int] = ...) -> None: ...

class SnapshotJob(_message.Message):
    __slots__ = ("job_id", "command", "status", "assigned_worker", "executed_by", "exit_code", "created_at_ms", "completed_at_ms", "image")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_WORKER_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_BY_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    command: str
    status: JobStatus
    assigned_worker: int
    executed_by: int
    exit_code: int
    created_at_ms: int
    completed_at_ms: int
    image: str
    def __init__(self, job_id: _Optional[str] = ..., command: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., assigned_worker: _Optional[int] = ..., executed_by: _Optional[int] = ..., exit_code: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., completed_at_ms: _Optional[int] = ..., image: _Optional[str] = ...) -> None: ...
