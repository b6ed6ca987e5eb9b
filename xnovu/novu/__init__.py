"""Talking to Novu: the events client, its token budget, and the local emulator."""
