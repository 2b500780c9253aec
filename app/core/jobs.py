"""Names shared by the SQL trigger (sql/migrations) and the worker. A test asserts they match.

The worker registers its blueprint under :data:`NAMESPACE`, so procrastinate's full task names
are ``NAMESPACE:short_name``; the trigger defers by the full name.
"""

#: procrastinate queue of hookline's jobs.
QUEUE = "hookline"
#: Blueprint namespace of hookline's tasks.
NAMESPACE = "hookline"
#: Task that processes one event: ``process_event(event_id=N)``.
PROCESS_EVENT_SHORT = "process_event"
PROCESS_EVENT = f"{NAMESPACE}:{PROCESS_EVENT_SHORT}"
#: Periodic upkeep (stalled jobs, retention).
MAINTENANCE_SHORT = "maintenance"
MAINTENANCE = f"{NAMESPACE}:{MAINTENANCE_SHORT}"
#: Fires one ``[schedules.NAME]`` (a procrastinate periodic task per schedule, periodic_id = NAME).
FIRE_SCHEDULE_SHORT = "fire_schedule"
FIRE_SCHEDULE = f"{NAMESPACE}:{FIRE_SCHEDULE_SHORT}"
#: procrastinate queue of events a synchronous reply waits for (``respond = "sync"``). Workers listen
#: on it first, and its jobs carry :data:`SYNC_PRIORITY`, so they run ahead of any backlog.
SYNC_QUEUE = "hookline-sync"
#: Job priority of sync-queue jobs (procrastinate runs higher priorities first).
SYNC_PRIORITY = 1000
