"""Inside the worker: the supervised task and request, the bootsteps and the control commands."""
