"""Development tools, installed with the `dev` extra: the local stack, the Novu emulator, `xnovu dev`, the bench."""
