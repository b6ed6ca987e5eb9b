"""`python -m xnovu` = the `xnovu` command (used by `worker start --detach`)."""

from xnovu.cli import entrypoint

entrypoint()
