"""What the gateway's handlers raise; `app.py` maps each to its HTTP status."""


class JobNotFound(Exception):
    def __init__(self, job_id: int | str) -> None:
        super().__init__(f"作业 {job_id} 未找到")


class DependencyDown(Exception):
    """A service this request needs is unreachable (503, naming it)."""
