"""The run engine: the run directory's lock and the checkpoints a resumed run reloads.

Torch-free: the report, the dashboard and the gate read a run's lock to tell a live run from a
dead one.
"""
