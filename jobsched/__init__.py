"""jobsched: a distributed batch-job scheduler on Twisted and Raft."""

__version__ = "0.1.0"
