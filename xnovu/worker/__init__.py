"""The running worker: the composition root, the manager, the health server, process control, wake-ups."""
