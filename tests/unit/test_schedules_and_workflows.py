"""Fixed Temporal names and shapes (docs/design.md "Parts") and the named SQL blocks the repository relies on."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy, ScheduleState

import xnovu
from xnovu.config import Settings
from xnovu.core.models import PollInput, PollKind
from xnovu.db.queries import q, queries
from xnovu.errors import XnovuError
from xnovu.temporal import searchattrs
from xnovu.temporal.schedules import (
    NOTES,
    POLL_RUN_TIMEOUT,
    _fingerprint,
    desired_schedule,
    parse_kind,
    schedule_id,
    worst_poll_run,
)
from xnovu.temporal.workflows import child_id

PACKAGE = Path(xnovu.__file__).parent


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def action_of(kind: PollKind, s: Settings | None = None) -> ScheduleActionStartWorkflow:
    action = desired_schedule(s or settings(), kind).action
    assert isinstance(action, ScheduleActionStartWorkflow)
    return action


# -- parse_kind / schedule_id --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("new", PollKind.NEW),
        ("failed", PollKind.FAILED),
        ("scheduled", PollKind.SCHEDULED),
        ("xnovu-poll-new", PollKind.NEW),
        ("xnovu-poll-failed", PollKind.FAILED),
        ("xnovu-poll-scheduled", PollKind.SCHEDULED),
    ],
)
def test_parse_kind_accepts_short_and_schedule_names(name: str, kind: PollKind) -> None:
    assert parse_kind(name) is kind


@pytest.mark.parametrize("name", ["bogus", "xnovu-poll-bogus", "", "poll-new"])
def test_parse_kind_rejects_unknown_name_listing_valid_ones(name: str) -> None:
    with pytest.raises(XnovuError) as info:
        parse_kind(name)
    message = str(info.value)
    assert repr(name) in message
    for valid in ("xnovu-poll-new", "xnovu-poll-failed", "xnovu-poll-scheduled"):
        assert valid in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", list(PollKind))
def test_schedule_ids_are_the_spec_names(kind: PollKind) -> None:
    assert schedule_id(kind) == f"xnovu-poll-{kind.value}"
    assert {schedule_id(k) for k in PollKind} == {"xnovu-poll-new", "xnovu-poll-failed", "xnovu-poll-scheduled"}


# -- desired_schedule ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PollKind))
def test_overlap_policy_is_buffer_one(kind: PollKind) -> None:
    """Never two polls of a kind at once, and a tick during a long poll runs right after it (no lost tick)."""
    assert desired_schedule(settings(), kind).policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE


@pytest.mark.parametrize("kind", list(PollKind))
def test_catchup_window_is_minutes_not_a_year(kind: PollKind) -> None:
    window = desired_schedule(settings(), kind).policy.catchup_window
    assert timedelta(seconds=10) <= window <= timedelta(minutes=5)  # Temporal's minimum is 10 s


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {PollKind.NEW: 10, PollKind.FAILED: 60, PollKind.SCHEDULED: 30}),
        (
            {"poll_interval_ms": 1500, "failed_poll_interval_ms": 1, "scheduled_poll_interval_ms": 4000},
            {PollKind.NEW: 2, PollKind.FAILED: 1, PollKind.SCHEDULED: 4},
        ),
    ],
)
def test_interval_comes_from_settings(values: dict[str, int], expected: dict[PollKind, int]) -> None:
    s = settings(**values)
    for kind in PollKind:
        spec = desired_schedule(s, kind).spec
        assert [i.every for i in spec.intervals] == [timedelta(seconds=s.interval_seconds(kind))]
        assert spec.intervals[0].every == timedelta(seconds=expected[kind])
        assert not spec.calendars
        assert not spec.cron_expressions


@pytest.mark.parametrize("kind", list(PollKind))
def test_action_starts_the_poll_workflow_on_the_poll_queue_of_the_configured_queue(kind: PollKind) -> None:
    """The polls have a queue of their own beside TEMPORAL_TASK_QUEUE (xnovu/temporal/options.py), whose children
    go back to TEMPORAL_TASK_QUEUE."""
    from xnovu.temporal.options import child_task_queue

    action = action_of(kind, settings(temporal_task_queue="tq-custom"))
    assert action.workflow == "PollNotificationsWorkflow"
    assert action.id == f"xnovu-poll-{kind.value}"
    assert action.task_queue == "tq-custom-polls"
    assert child_task_queue(action.task_queue) == "tq-custom"
    assert child_task_queue("tq-custom") == "tq-custom", "a poll started on the main queue keeps its children there"
    assert list(action.args) == [PollInput(kind)]
    # A stuck run cannot block its schedule forever, but a long drain or back-pressure chain (continue-as-new)
    # is never cut: the bound is per run, none covers the chain (issue 16, finding 6).
    assert action.execution_timeout is None
    assert action.run_timeout == POLL_RUN_TIMEOUT


def test_a_poll_run_timeout_is_well_above_one_poll_run() -> None:
    # claim (every try and backoff of CLAIM_RETRY) + at most CAPACITY_WAIT_MAX of back-pressure sleep
    assert worst_poll_run() < timedelta(minutes=4)
    assert POLL_RUN_TIMEOUT >= 2 * worst_poll_run()


def test_an_installed_schedule_with_the_old_chain_wide_timeout_is_updated() -> None:
    current = desired_schedule(settings(), PollKind.NEW, run_timeout=None, execution_timeout=timedelta(hours=1))
    assert _fingerprint(current) != _fingerprint(desired_schedule(settings(), PollKind.NEW))


@pytest.mark.parametrize("kind", list(PollKind))
def test_new_schedule_is_running_with_a_descriptive_note(kind: PollKind) -> None:
    state = desired_schedule(settings(), kind).state
    assert state.paused is False
    assert state.note == NOTES[kind]
    assert state.note


@pytest.mark.parametrize("kind", list(PollKind))
def test_given_state_is_kept_untouched(kind: PollKind) -> None:
    """Bootstrap re-applies configuration but must not resume a schedule an operator paused (README "Operations")."""
    kept = ScheduleState(paused=True, note="paused by ops during the migration")
    schedule = desired_schedule(settings(poll_interval_ms=2000), kind, kept)
    assert schedule.state is kept
    assert schedule.state.paused is True
    assert schedule.state.note == "paused by ops during the migration"


# -- _fingerprint --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PollKind))
def test_fingerprint_is_stable_for_the_same_settings(kind: PollKind) -> None:
    assert _fingerprint(desired_schedule(settings(), kind)) == _fingerprint(desired_schedule(settings(), kind))


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (PollKind.NEW, "poll_interval_ms"),
        (PollKind.FAILED, "failed_poll_interval_ms"),
        (PollKind.SCHEDULED, "scheduled_poll_interval_ms"),
    ],
)
def test_fingerprint_changes_with_the_interval_of_its_kind(kind: PollKind, field: str) -> None:
    before = _fingerprint(desired_schedule(settings(), kind))
    after = _fingerprint(desired_schedule(settings(**{field: 123_000}), kind))
    assert before != after


def test_fingerprint_ignores_intervals_of_other_kinds() -> None:
    before = _fingerprint(desired_schedule(settings(), PollKind.FAILED))
    after = _fingerprint(desired_schedule(settings(poll_interval_ms=2000), PollKind.FAILED))
    assert before == after


def test_fingerprint_changes_with_the_task_queue() -> None:
    before = _fingerprint(desired_schedule(settings(), PollKind.NEW))
    after = _fingerprint(desired_schedule(settings(temporal_task_queue="tq-other"), PollKind.NEW))
    assert before != after


def test_fingerprint_ignores_paused_state_and_note() -> None:
    """A paused schedule whose configuration is current is "unchanged", not updated (and not resumed)."""
    running = desired_schedule(settings(), PollKind.NEW)
    paused = desired_schedule(settings(), PollKind.NEW, ScheduleState(paused=True, note="maintenance"))
    assert _fingerprint(running) == _fingerprint(paused)


def test_rounded_intervals_give_equal_fingerprints() -> None:
    """9001 ms and 10000 ms both schedule every 10 s: no needless update."""
    a = _fingerprint(desired_schedule(settings(poll_interval_ms=9001), PollKind.NEW))
    b = _fingerprint(desired_schedule(settings(poll_interval_ms=10_000), PollKind.NEW))
    assert a == b


# -- workflow ids and search attributes ----------------------------------------------------------------------


def test_child_id_names_notification_and_attempt() -> None:
    assert child_id(42, 3) == "notification-42-a3"


def test_child_ids_differ_per_attempt_and_per_notification() -> None:
    ids = {child_id(n, a) for n in (1, 11, 111) for a in (1, 11)}
    assert len(ids) == 6
    assert child_id(1, 11) != child_id(11, 1)


def test_search_attributes_carry_all_four_values() -> None:
    attrs = searchattrs.for_notification(42, "welcome-email", "8c2f4b1e-0a6d-4c59-9d5e-3f1b2a7c6d90", 2)
    assert attrs.get(searchattrs.NOTIFICATION_ID) == 42
    assert attrs.get(searchattrs.WORKFLOW_KEY) == "welcome-email"
    assert attrs.get(searchattrs.ENTERPRISE_ID) == "8c2f4b1e-0a6d-4c59-9d5e-3f1b2a7c6d90"
    assert attrs.get(searchattrs.PRIORITY) == 2
    assert len(attrs) == 4


@pytest.mark.parametrize(("workflow_key", "enterprise_id"), [(None, None), ("", ""), (None, ""), ("", None)])
def test_search_attributes_omit_unknown_values(workflow_key: str | None, enterprise_id: str | None) -> None:
    attrs = searchattrs.for_notification(7, workflow_key, enterprise_id)
    assert attrs.get(searchattrs.NOTIFICATION_ID) == 7
    assert searchattrs.WORKFLOW_KEY not in attrs
    assert searchattrs.ENTERPRISE_ID not in attrs
    assert attrs.get(searchattrs.PRIORITY) == 0  # always set: `XnovuPriority = 0` finds the normal ones
    assert len(attrs) == 2


def test_search_attribute_names_are_the_spec_names() -> None:
    assert {k.name for k in searchattrs.ALL_KEYS} == {
        "XnovuNotificationId",
        "XnovuWorkflowKey",
        "XnovuEnterpriseId",
        "XnovuRuleId",
        "XnovuPriority",
    }


@pytest.mark.parametrize(
    ("urgency", "enterprise", "key", "fairness"),
    [
        (0, None, 3, "none"),
        (2, "8C2F4B1E-0A6D-4C59-9D5E-3F1B2A7C6D90", 1, "8c2f4b1e-0a6d-4c59-9d5e-3f1b2a7c6d90"),
        (-5, "", 5, "none"),
    ],
)
def test_temporal_priority_is_the_urgency_key_and_the_enterprise(
    urgency: int, enterprise: str | None, key: int, fairness: str
) -> None:
    p = searchattrs.temporal_priority(urgency, enterprise)
    assert (p.priority_key, p.fairness_key, p.fairness_weight) == (key, fairness, None)


# -- queries.sql ---------------------------------------------------------------------------------------------

_CALL = re.compile(r"\bq\(\s*(f?)\"([^\"]*)\"\s*\)")
#: f-string names expanded per poll kind: the claim's oldest candidates and the heads of its fair-share walk.
_PER_KIND = {"candidates_{kind.value}": "candidates_", "heads_{kind.value}": "heads_"}


def used_query_names() -> set[str]:
    """Every block name passed to q(...) anywhere in the package (the claim's f-strings expanded per kind)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for is_f, name in _CALL.findall(source):
            if not is_f:
                names.add(name)
            elif name in _PER_KIND:
                names.update(f"{_PER_KIND[name]}{k.value}" for k in PollKind)
            else:
                pytest.fail(f'{path.name}: q(f"{name}") cannot be checked; extend this test')
    return names


def test_the_scan_sees_the_repository_and_migration_calls() -> None:
    """Guards the scan itself: if the call syntax changed, the check below would pass vacuously."""
    names = used_query_names()
    assert {"candidates_new", "candidates_failed", "candidates_scheduled", "claim_rows", "acquire", "finalize"} <= names
    assert {"heads_new", "heads_failed", "heads_scheduled", "claim_flight"} <= names
    assert {"migrations_lock", "migrations_table", "migrations_applied", "migrations_record"} <= names
    for module in ("db/repository.py", "db/migrate.py"):
        source = (PACKAGE / module).read_text(encoding="utf-8")
        assert len(re.findall(r"\bq\(", source)) == len(_CALL.findall(source)), module


def test_every_query_name_used_exists_in_queries_sql() -> None:
    missing = sorted(used_query_names() - set(queries()))
    assert missing == []


def test_no_block_is_empty() -> None:
    """A blank block, or one holding only comments, would fail only when its code path first runs."""
    no_code = [
        name
        for name, sql in queries().items()
        if not [line for line in sql.splitlines() if line.strip() and not line.strip().startswith("--")]
    ]
    assert no_code == []


def test_block_names_are_unique() -> None:
    """A second block with the same name would silently replace the first."""
    text = (PACKAGE / "db" / "queries.sql").read_text(encoding="utf-8")
    names = re.findall(r"^--\s*name:\s*(\w+)\s*$", text, flags=re.MULTILINE)
    assert len(names) == len(set(names)) == len(queries())


def test_q_returns_the_block_and_names_a_missing_one() -> None:
    assert "ent_notification" in q("load_notification")
    with pytest.raises(KeyError, match="no_such_block"):
        q("no_such_block")


class _SlowSchedule:
    """A Schedule that drops its first `steps - 1` patches (a trigger landing in the same step replaces a pause: the
    CI failure, tests/integration/test_attack19.py). A stand-in for the server only in this unit test of the
    waiting; the integration tests pause real ones. Every applied patch moves the conflict token, as on the server."""

    def __init__(self, sid: str, steps: int) -> None:
        self.id = sid
        self.steps = steps
        self.patches: list[str] = []
        self.paused = False
        self.note = ""
        self.token = 7

    async def pause(self, note: str) -> None:
        self.patches.append(note)
        if len(self.patches) >= self.steps:
            self.paused, self.note, self.token = True, note, self.token + 1

    async def describe(self) -> object:
        from types import SimpleNamespace

        return SimpleNamespace(
            schedule=SimpleNamespace(state=SimpleNamespace(paused=self.paused, note=self.note)),
            raw_description=SimpleNamespace(conflict_token=self.token.to_bytes(8, "big")),
        )


class _Client:
    def __init__(self, steps: int) -> None:
        self.handles: dict[str, _SlowSchedule] = {}
        self.steps = steps

    def get_schedule_handle(self, sid: str) -> _SlowSchedule:
        return self.handles.setdefault(sid, _SlowSchedule(sid, self.steps))


def _fast(monkeypatch: pytest.MonkeyPatch, timeout_s: float = 5.0) -> None:
    from xnovu.temporal import schedules

    monkeypatch.setattr(schedules, "SETTLE_TIMEOUT_S", timeout_s)
    monkeypatch.setattr(schedules, "SETTLE_RESEND_S", 0.05)
    monkeypatch.setattr(schedules, "SETTLE_POLL_S", (0.01, 0.02))


async def test_a_dropped_pause_is_sent_again_with_the_same_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from xnovu.temporal import schedules

    _fast(monkeypatch)
    client = _Client(steps=2)
    done = await schedules.set_paused(client, list(PollKind), True, "maintenance")  # type: ignore[arg-type]
    assert done == [schedule_id(k) for k in PollKind]
    assert all(h.paused and h.patches == ["maintenance", "maintenance"] for h in client.handles.values())


async def test_a_pause_that_never_reads_back_ends_in_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from xnovu.temporal import schedules

    _fast(monkeypatch, timeout_s=0.2)
    with pytest.raises(XnovuError, match=r"still reads unpaused 0\.2 s after the change; check the Temporal server"):
        await schedules.set_paused(_Client(steps=10**6), [PollKind.NEW], True)  # type: ignore[arg-type]


async def test_a_resume_is_not_sent_again_over_a_change_someone_made_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token moved and the state is not the one asked for: someone else paused it since; say so, send nothing."""
    from xnovu.temporal import schedules

    _fast(monkeypatch)
    client = _Client(steps=1)
    handle = client.get_schedule_handle(schedule_id(PollKind.NEW))
    sent: list[str] = []

    async def unpause(note: str) -> None:
        sent.append(note)
        await handle.pause("incident")  # someone else's pause lands instead of this resume

    handle.unpause = unpause  # type: ignore[attr-defined]
    with pytest.raises(XnovuError, match=r"changed by someone else meanwhile and is paused \(note: 'incident'\)"):
        await schedules.set_paused(client, [PollKind.NEW], False, "back")  # type: ignore[arg-type]
    assert sent == ["back"] and handle.paused
