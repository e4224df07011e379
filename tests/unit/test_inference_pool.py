"""The inference pool with real processes and pipes, outside virtual time.

The engines are :mod:`tests.unit.inference_fake` (no model): each process appends what it
runs to a log file, so the order requests ran in is read back from it. Each test waits only
for what it asked for (answers, process exits), never a fixed sleep; the fake engines' own
sleeps keep a process busy while the test queues more behind it.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import aclosing
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from media_sidecar.config.schema import SttConfig, TtsConfig
from media_sidecar.speech.base import SpeechEngineError
from media_sidecar.speech.pool import EngineSet, InferencePool

FAKE = "tests.unit.inference_fake"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "ran.log"
    path.touch()
    return path


def ran(log: Path) -> list[str]:
    """What the processes ran, in order, without the pids (and without the whole texts)."""
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()
            if line.split(" ")[1] not in ("said", "warm")]


def make_pool(log: Path, processes: int, **kw) -> tuple[InferencePool, str, str]:
    engines = EngineSet()
    stt = engines.add_stt(SttConfig(model=str(log)))
    tts = engines.add_tts(TtsConfig(voice=str(log)))
    pool = InferencePool(engines, processes=processes, module=FAKE, **kw)
    pool.start()
    return pool, stt, tts


async def say_all(pool: InferencePool, call: str, engine: str, text: str) -> int:
    """Synthesise ``text`` to its end; the number of chunks."""
    n = 0
    async with aclosing(pool.synthesize(call, engine, text)) as chunks:
        async for _ in chunks:
            n += 1
    return n


def utterance(tag: int, ms: int = 0, crash: bool = False) -> bytes:
    return np.array([tag, ms, int(crash), 0, 0], dtype="<i2").tobytes()


@pytest.fixture
def pool1(log: Path):
    pool, stt, tts = make_pool(log, 1)
    yield pool, stt, tts
    pool.close()


@pytest.fixture
def pool2(log: Path):
    pool, stt, tts = make_pool(log, 2)
    yield pool, stt, tts
    pool.close()


async def test_answers_come_back_and_speech_streams_in_chunks(pool2, log):
    pool, stt, tts = pool2
    assert await pool.transcribe("call-1", stt, utterance(7)) == "stt 7"
    async with aclosing(pool.synthesize("call-1", tts, "hello chunks=3")) as gen:
        chunks = [np.frombuffer(c, "<i2") async for c in gen]
    assert [(len(c), int(c[0]), int(c[-1])) for c in chunks] == [(800, 1, 1), (800, 2, 2),
                                                                 (800, 3, 3)]
    assert ran(log) == ["stt 7", "tts hello", "chunk hello 0", "chunk hello 1", "chunk hello 2"]
    kinds = [s[0] for s in pool.stats.samples]
    assert kinds == ["stt", "tts"]


async def test_each_process_warms_its_recognizer_before_its_first_request(pool2, log):
    # onnxruntime's first run is slow (its arenas and kernels): each process pays it while
    # loading, never on a caller's turn
    pool, stt, _ = pool2
    async with trio.open_nursery() as nursery:
        for i in range(2):
            nursery.start_soon(pool.transcribe, f"c{i}", stt, utterance(i, ms=300))
    by_pid: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        pid, what = line.split(" ", 1)
        by_pid.setdefault(pid, []).append(what)
    assert len(by_pid) == 2, by_pid
    for lines in by_pid.values():
        assert lines[0] == "warm stt" and lines.count("warm stt") == 1, lines
        assert any(x.startswith("stt ") for x in lines[1:]), lines


async def test_calls_take_turns_and_recognition_goes_first(pool1, log):
    """One process, busy with call A's first sentence: A queues five more, then B one
    sentence, then C one utterance. C's recognition runs first, then A and B alternate (B's
    only sentence is not stuck behind A's five), then the rest of A's in A's order."""
    pool, stt, tts = pool1
    done: list[str] = []

    async def say(call: str, text: str) -> None:
        await say_all(pool, call, tts, text)
        done.append(text.split()[0])

    async def hear(call: str, tag: int) -> None:
        done.append(await pool.transcribe(call, stt, utterance(tag)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(say, "A", "a0 sleep=0.3 chunks=1")
        await trio.testing.wait_all_tasks_blocked()  # a0 runs; what follows queues behind it
        for i in range(1, 6):
            nursery.start_soon(say, "A", f"a{i} chunks=1")
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(say, "B", "b1 chunks=1")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hear, "C", 9)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.snapshot()["queued"] == {"stt": 1, "tts": 6}
    order = [line for line in ran(log) if not line.startswith("chunk")]
    assert order == ["tts a0", "stt 9", "tts a1", "tts b1", "tts a2", "tts a3", "tts a4",
                     "tts a5"]
    assert done[0] == "a0" and done[1] == "stt 9"


async def test_cancelling_drops_queued_requests_and_stops_a_running_synthesis(pool1, log):
    """A barge-in: call A's sentence is cut after its first chunk (the process stops after
    the chunk it is making, not at the end of the sentence) and A's queued sentence never
    runs; call B's sentence, queued behind, then runs at once."""
    pool, stt, tts = pool1
    first = trio.Event()
    b_done = trio.Event()

    async def a_speaks() -> None:
        async with aclosing(pool.synthesize("A", tts, "long sleep=0.1 chunks=50")) as chunks:
            async for _ in chunks:
                first.set()
                await trio.sleep_forever()  # cancelled by the barge-in below

    async def a_queued() -> None:
        await say_all(pool, "A", tts, "never chunks=1")

    async def b_speaks() -> None:
        await say_all(pool, "B", tts, "b chunks=1")
        b_done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a_speaks)
            await first.wait()
            nursery.start_soon(a_queued)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(b_speaks)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.snapshot()["queued"]["tts"] == 2
            # the barge-in: A's turn (its running and queued sentences) is cancelled
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b_speaks)
            await b_done.wait()
    lines = ran(log)
    assert "tts never" not in lines
    assert lines.count("tts b") == 1  # the cancelled B ran nothing; the second one ran once
    made = [line for line in lines if line.startswith("chunk long")]
    assert 1 <= len(made) <= 3, made  # stopped at the next chunk boundary, not after 50
    assert pool.stats.cancelled == 1
    # the process is clean: the next request gets its own answer
    assert await pool.transcribe("A", stt, utterance(4)) == "stt 4"


async def test_a_killed_process_fails_its_request_only_and_is_replaced(pool2, log):
    pool, stt, tts = pool2
    before = set(pool.pids)
    results: dict[str, object] = {}

    async def long(call: str, tag: int) -> None:
        try:
            results[call] = await pool.transcribe(call, stt, utterance(tag, ms=600))
        except SpeechEngineError as exc:
            results[call] = exc

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(long, "A", 1)
            nursery.start_soon(long, "B", 2)
            await trio.testing.wait_all_tasks_blocked()  # both sent, both waiting for answers
            victim = pool.serving("A")
            assert victim is not None and victim != pool.serving("B")
            os.kill(victim, signal.SIGKILL)
    assert isinstance(results["A"], SpeechEngineError), results
    assert "ended" in str(results["A"])
    assert results["B"] == "stt 2"
    assert pool.stats.replaced == 1
    after = set(pool.pids)
    assert victim not in after and len(after) == 2 and after & before
    # both processes serve again, the replacement included
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(long, f"C{i}", 10 + i)
    assert [results[f"C{i}"] for i in range(4)] == [f"stt {10 + i}" for i in range(4)]
    pids = {line.split()[0] for line in log.read_text().splitlines()[-4:]}  # stt lines only
    assert pids == {str(p) for p in after}


async def test_a_process_that_dies_on_a_request_is_replaced_and_queued_requests_go_on(pool1, log):
    pool, stt, tts = pool1
    (pid,) = pool.pids

    async def crash() -> None:
        with pytest.raises(SpeechEngineError):
            await pool.transcribe("A", stt, utterance(1, crash=True))

    async def after() -> None:
        assert await pool.transcribe("B", stt, utterance(2)) == "stt 2"

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(after)
    assert pool.pids != [pid]
    assert ran(log) == ["stt 1", "stt 2"]


def test_an_engine_that_does_not_load_is_reported_and_the_others_serve(log):
    engines = EngineSet()
    good = engines.add_stt(SttConfig(model=str(log)))
    bad = engines.add_tts(TtsConfig(voice="broken"))
    pool = InferencePool(engines, processes=1, module=FAKE)
    pool.start()
    try:
        assert pool.errors == {bad: "fake voice 'broken' does not load"}
        assert trio.run(pool.transcribe, "A", good, utterance(3)) == "stt 3"

        async def say() -> None:
            async for _ in pool.synthesize("A", bad, "x"):
                pass

        with pytest.raises(SpeechEngineError, match="not loaded"):
            trio.run(say)
    finally:
        pool.close()


def test_load_adds_engines_to_every_process(log, tmp_path):
    pool, stt, tts = make_pool(log, 2)
    try:
        other = tmp_path / "other.log"
        new = EngineSet()
        key = new.add_tts(TtsConfig(voice=str(other), speed=1.5))
        assert trio.run(pool.load, new) == {}

        async def both() -> None:
            async with trio.open_nursery() as nursery:
                for i in range(2):
                    nursery.start_soon(pool.synthesize_all, f"c{i}", key, f"n{i} sleep=0.2")

        trio.run(both)
        assert len({line.split()[0] for line in other.read_text().splitlines()}) == 2
    finally:
        pool.close()


def test_the_processes_exit_when_the_pool_closes(log):
    pool, _, _ = make_pool(log, 2)
    procs = [w.proc for w in pool._workers]
    pool.close()
    assert [p.returncode for p in procs] == [0, 0]
    with pytest.raises(SpeechEngineError, match="closed"):
        trio.run(pool.transcribe, "A", "x", b"")


def test_the_processes_outlive_the_thread_that_started_them(log):
    """The sidecar starts the pool from one of trio's worker threads, which ends after a few
    idle seconds: its processes must not go with it."""
    engines = EngineSet()
    stt = engines.add_stt(SttConfig(model=str(log)))
    pool = InferencePool(engines, processes=1, module=FAKE)
    starter = threading.Thread(target=pool.start)
    starter.start()
    starter.join()
    try:
        assert trio.run(pool.transcribe, "A", stt, utterance(5)) == "stt 5"
        assert pool.stats.replaced == 0
    finally:
        pool.close()


async def test_a_process_killed_while_idle_is_replaced_before_a_request_needs_it(pool1, log):
    pool, stt, tts = pool1
    (pid,) = pool.pids
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with trio.fail_after(10):
        await trio.to_thread.run_sync(pool._workers[0].proc.wait)  # it is gone
        assert await pool.transcribe("A", stt, utterance(6)) == "stt 6"
    assert pool.stats.replaced == 1 and pool.stats.failed == 0 and pool.pids != [pid]
