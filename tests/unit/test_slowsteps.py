"""The diagnostic instrument for a held media loop (AGI_VOICE_SLOW_STEP_MS)."""

from __future__ import annotations

import gc
import logging
import time

import pytest
import trio

from media_sidecar.ops import slowsteps


def test_off_by_default_and_on_with_a_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(slowsteps.ENV, raising=False)
    assert slowsteps.from_env() == []
    monkeypatch.setenv(slowsteps.ENV, "many")
    assert slowsteps.from_env() == []
    before = list(gc.callbacks)
    monkeypatch.setenv(slowsteps.ENV, "5")
    try:
        (inst,) = slowsteps.from_env()
        assert isinstance(inst, slowsteps.SlowSteps) and inst.threshold == 0.005
    finally:
        gc.callbacks[:] = before


def test_a_task_step_that_holds_the_loop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    inst = slowsteps.SlowSteps(5)

    async def main() -> None:
        async def hog() -> None:
            time.sleep(0.02)  # noqa: ASYNC251 - holds the loop: what the instrument is for

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hog, name="the-hog")
            nursery.start_soon(trio.sleep, 0.001, name="polite")

    with caplog.at_level(logging.WARNING, logger="agi_voice.slow"):
        trio.run(main, instruments=[inst])
    assert inst.slow == 1
    assert any("the-hog" in r.getMessage() for r in caplog.records)
