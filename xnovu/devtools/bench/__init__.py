"""`xnovu bench`: plan and targets (pure), the phases against a live stack, rendering."""
