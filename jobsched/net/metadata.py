"""Names of the gRPC metadata jobsched sends along with its answers (API.md §4)."""

ERROR_CODE = "jobsched-error-code"
"""Trailing metadata: the stable code of the error (jobsched.errors) a call ended with."""

LEADER_ADDRESS = "jobsched-leader-address"
"""Trailing metadata of a NOT_LEADER error: the leader's client address, when known."""
