"""The trigger core: what crosses Temporal, the notification statuses, the processor and the rule logic."""
