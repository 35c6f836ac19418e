"""The process model: how live sessions are spread over processes and admitted.

``workers.py`` starts, supervises and places sessions on worker processes; ``worker.py`` is
a worker's entry point; ``ipc.py`` is the channel between them. ``admission.py``,
``loop_lag.py`` and ``cpu_budget.py`` decide whether a process or the machine takes a new
session; ``memory.py`` gives back what ended sessions freed. A node registry for many hosts
belongs here.

Nothing here imports from ``api/``: the API calls into it, through ``live.manager.SessionHost``.
"""
