"""The run engine: the run directory (``rundir``: whether a run may write it, clearing it) and its lock,
the checkpoints a resumed run reloads, the chunks of samples the expensive sections work in (``chunks``)
and the backends that run them (``backends``: in-process or Ray).

Torch-free: the report, the dashboard and the gate read a run's lock to tell a live run from a
dead one.
"""
