"""A job table snapshot in the older form (format 1, each job a JSON object): tests
change a field by name and restore it, which exercises the format-1 path of restore."""

from __future__ import annotations

import json


def as_format_1(data: bytes) -> dict:
    """The decoded snapshot `data` (either format) as a format-1 state."""
    state = json.loads(data)
    if state["format"] == 1:
        return state
    names, attempt_names = state.pop("fields"), state.pop("attempt_fields")
    jobs = []
    for values in state["jobs"]:
        job = dict(zip(names, values, strict=True))
        job["attempt_history"] = [
            dict(zip(attempt_names, attempt, strict=True)) for attempt in job["attempt_history"]
        ]
        jobs.append(job)
    return {**state, "format": 1, "jobs": jobs}
