"""The beat task as it was before batched dispatch (main at 9d294ac): one
``bill_integration.refresh_session`` message per due id. Loaded into the benchmark's worker
(``celery worker -I bench.sweep_old_dispatch``) as the baseline of the same run."""

from __future__ import annotations

from celery import shared_task

OLD_REFRESH_DUE_SESSIONS = "bench.refresh_due_sessions_one_per_id"


@shared_task(name=OLD_REFRESH_DUE_SESSIONS, ignore_result=True)
def refresh_due_sessions_one_per_id() -> int:
    from bill_integration.services import refresh_due
    from bill_integration.tasks import _send_refresh

    return len(refresh_due(dispatch=_send_refresh))
