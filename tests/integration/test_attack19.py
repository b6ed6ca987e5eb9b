"""A fresh-context attack review of `set_paused`'s resend, the bootstrap's narrowed heal and the namespaces registered
one test ahead (commits 9dc9094, 0acc37c, ef4887b), on the real stack: real Postgres, the real Temporal dev server
(1.32, whose schedule keeps one pending patch: a pause followed in the same step by a trigger is dropped).

Each test asserts what should hold. Finding 1 (a resend undid another operator's pause) is fixed by the conflict
token guard in `_settled`; finding 2 (the cause of the CI failure) is what the resend is for, now every second;
finding 3 keeps a worker start that creates its own namespace on the suite.

Run: pytest tests/integration/test_attack19.py --basetemp=/tmp/pt-attack19
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support import Env, eventually
from xnovu.core.models import PollKind
from xnovu.errors import XnovuError
from xnovu.temporal import schedules
from xnovu.temporal.bootstrap import _namespace_exists
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.schedules import ensure_schedules, schedule_id

#: No tick during a test: the schedules' own runs play no part here.
QUIET = {"poll_interval_ms": 3_600_000, "failed_poll_interval_ms": 3_600_000, "scheduled_poll_interval_ms": 3_600_000}


async def test_a_resend_does_not_undo_an_incident_pause_made_while_a_resume_settled(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operator A resumes after maintenance; before A's resume reads back, operator B pauses for an incident, and
    B's command returns "paused". Without the guard, A's wait read B's pause, could not tell it from its own resume
    not having landed yet, and re-sent the resume: the polls ran again during the incident, and both commands
    reported success. Now A's wait sees the conflict token moved past the one it read before sending, and stops with
    one line naming the change; B's pause stands.

    B's command is run in the window by wrapping `_settled` (the only stand-in: the server, the schedule and both
    commands are real); the resend period is shortened from 10 s to 0.3 s."""
    client = await connect_temporal(env.settings)
    await ensure_schedules(client, env.settings.model_copy(update=QUIET))
    await schedules.set_paused(client, [PollKind.NEW], True, "maintenance")
    monkeypatch.setattr(schedules, "SETTLE_RESEND_S", 0.3, raising=False)  # absent before 9dc9094
    monkeypatch.setattr(schedules, "SETTLE_TIMEOUT_S", 3.0)
    real = schedules._settled
    b_said: list[list[str]] = []

    async def b_pauses_in_the_window(handle: Any, paused: bool, *rest: Any) -> None:
        if not paused and not b_said:
            b_said.append(await schedules.set_paused(client, [PollKind.NEW], True, "B: incident, hold everything"))
        await real(handle, paused, *rest)

    monkeypatch.setattr(schedules, "_settled", b_pauses_in_the_window)
    with pytest.raises(XnovuError, match=r"was changed by someone else meanwhile and is paused .*B: incident"):
        await schedules.set_paused(client, [PollKind.NEW], False)
    await asyncio.sleep(1.0)
    state = (await client.get_schedule_handle(schedule_id(PollKind.NEW)).describe()).schedule.state
    assert b_said == [[schedule_id(PollKind.NEW)]]
    assert state.paused, f"B's pause (the last command, reported done) was undone: {state.note!r}"


async def test_a_pause_erased_by_a_wakeup_trigger_is_sent_again_and_holds(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI failure's likely cause, and what keeps the resend worth having: a worker's wake-up listener fires one
    wake-up per kind when it connects (xnovu/worker/wakeup.py), each a describe and then a trigger. A trigger that
    lands after an operator's pause, in the same step of the schedule, replaces the pause (the server keeps one
    pending patch per schedule): the pause is gone, not late. Before 9dc9094 the wait then read "unpaused" for its
    whole 30 s and failed with the very line of the CI failure (2 of 3 runs, on an idle server); now the pause is
    sent again (every second; with the 10 s period first tried, the command took 11.1 and 11.6 s in 2 of 4 runs,
    the polls claiming meanwhile)."""
    client = await connect_temporal(env.settings)
    await ensure_schedules(client, env.settings.model_copy(update=QUIET))
    monkeypatch.setattr(schedules, "SETTLE_RESEND_S", 1.0, raising=False)
    monkeypatch.setattr(schedules, "SETTLE_TIMEOUT_S", 8.0)
    real = schedules._settled

    async def a_wakeup_lands(handle: Any, paused: bool, *rest: Any) -> None:
        await handle.trigger()  # a wake-up whose describe read the schedule just before the pause
        await real(handle, paused, *rest)

    monkeypatch.setattr(schedules, "_settled", a_wakeup_lands)
    await schedules.set_paused(client, [PollKind.NEW], True, "maintenance")
    handle = client.get_schedule_handle(schedule_id(PollKind.NEW))
    await asyncio.sleep(1.0)
    state = (await handle.describe()).schedule.state
    assert state.paused and state.note == "maintenance", state


async def test_the_conflict_token_moves_with_each_applied_pause_or_resume_and_not_with_a_trigger(env: Env) -> None:
    """The basis of the suggested fix for finding 1: read the token before sending; while the schedule still shows
    the token read before, the patch is not applied (queued or dropped) and re-sending it is safe; once the token
    moved and the state is not the one asked for, someone else paused or resumed it meanwhile: stop, say so."""
    client = await connect_temporal(env.settings)
    await ensure_schedules(client, env.settings.model_copy(update=QUIET))
    handle = client.get_schedule_handle(schedule_id(PollKind.NEW))
    t0 = await _token(handle)
    await handle.trigger()
    await asyncio.sleep(0.5)
    assert await _token(handle) == t0
    await handle.pause(note="one")
    await eventually(lambda: _paused_is(handle, True), timeout=10)
    assert await _token(handle) == t0 + 1
    await handle.pause(note="again")  # a resend of a pause already applied still counts
    await eventually(lambda: _note_is(handle, "again"), timeout=10)
    assert await _token(handle) == t0 + 2


async def _token(handle: Any) -> int:
    return int.from_bytes((await handle.describe()).raw_description.conflict_token, "big")


async def _note_is(handle: Any, note: str) -> bool:
    return bool((await handle.describe()).schedule.state.note == note)


async def _paused_is(handle: Any, paused: bool) -> bool:
    return bool((await handle.describe()).schedule.state.paused == paused)


@pytest.mark.fresh_namespace
async def test_a_first_worker_start_that_creates_its_namespace_sends_at_once(env: Env) -> None:
    """Every worker test used to start on a namespace its own bootstrap had just created (a new deployment's first
    start: `xnovu dev`, a first `xnovu worker start`); with namespaces registered a test ahead, only the CLI bootstrap
    and the TLS test (which starts its worker after a separate `xnovu bootstrap`) still do. This keeps the path on
    the suite: a worker whose own bootstrap creates the namespace, polling right away."""
    client = await connect_temporal(env.settings)
    assert not await _namespace_exists(client, env.settings.temporal_namespace)
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=1)
    async with env.worker():
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
    assert env.stats()["deliveries"] == 1
