"""Temporal side of xnovu: workflows, activities, schedules, bootstrap, worker and client."""
