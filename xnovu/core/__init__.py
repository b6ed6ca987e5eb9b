"""The domain, pure: what crosses Temporal (models), the notification statuses, the rule logic and the arithmetic of
priority, fair share, weights and backlog. It imports nothing of xnovu but its exception types (xnovu/errors.py),
so every layer may use it and it uses none (tests/unit/test_architecture.py); the processor that drives the database
and Novu lives a layer above, in xnovu/service/processor.py."""
