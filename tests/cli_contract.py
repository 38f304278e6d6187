"""The JSON keys CLI.md gives for `job status` (and `wait`, `submit --wait`): exactly
these, in this order, base keys first."""

STATUS_KEYS = [
    "job_id",
    "status",
    "output",
    "error",
    "assigned_worker",
    "executed_by",
    "exit_code",
    "created_at_ms",
    "completed_at_ms",
]
STATUS_EXT_KEYS = [
    "started_at_ms",
    "image",
    "timeout_seconds",
    "attempts",
    "output_truncated",
    "attempt_history",
]
