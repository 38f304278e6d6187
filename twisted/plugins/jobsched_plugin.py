"""twistd plugin `jobsched`: only a pointer at jobsched.tap (imported lazily)."""

from twisted.application.service import ServiceMaker

jobsched = ServiceMaker(
    "jobsched",
    "jobsched.tap",
    "A jobsched cluster node (Raft, gRPC, REST, worker)",
    "jobsched",
)
