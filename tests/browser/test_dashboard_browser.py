"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the real
dashboard server on loopback, reading a real call store (SQLite in a temp dir) that the real
media sidecar writes, with calls from the Asterisk emulator (tests/e2e/stack.py).

Skipped only when /usr/bin/chromium is absent (``apt-get install chromium``; .ci/run does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastagi_server.dashboard.auth import COOKIE, PASSWORD_ENV, Auth, DashboardError
from fastagi_server.dashboard.server import build
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Listen
from tests.browser.fill import fill, record, write_wav
from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    running_dashboard,
    running_stack,
    wait_for,
    with_store,
)
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e

if not Path(CHROMIUM).exists():
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium): the browser tests need it",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

BASE = load_config()
SHORT = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0], recording=True,
    brain=dataclasses.replace(BASE.assistants[0].brain, greeting="Hi, how can I help?")),))
HOSTILE = '<b id="pwn">x</b><script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
RECORDED_SECONDS = 2.5


@dataclasses.dataclass
class Env:
    base: str
    stack: Any
    store: Any
    store_url: str
    dash_cfg: Any
    synthetic: list[dict[str, Any]]
    recorded: dict[str, Any]
    hostile: dict[str, Any]

    @property
    def known(self) -> list[dict[str, Any]]:
        """Every record the test saved itself (the calls made through the stack aside)."""
        return [*self.synthetic, self.hostile, self.recorded]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from media_sidecar.store import open_store

    tmp = tmp_path_factory.mktemp("dash")
    store_url = f"sqlite:///{tmp / 'calls.db'}"
    recordings = tmp / "recordings"
    store = open_store(store_url)
    now = dt.datetime.now(dt.UTC)
    synthetic = fill(store, 80, hours=48, now=now)
    hostile = record(1000, now=now, hours=1)
    hostile["caller_name"] = HOSTILE
    hostile["turns"][1]["caller_text"] = HOSTILE
    store.save(hostile)
    recorded = record(1001, now=now, hours=1)
    wav = recordings / now.strftime("%Y-%m-%d") / f"{recorded['uuid']}.wav"
    write_wav(wav, RECORDED_SECONDS)
    recorded["recording"] = {"path": str(wav), "seconds": RECORDED_SECONDS, "rate": 8000,
                             "channels": 2}
    store.save(recorded)
    cfg = with_store(SHORT, store_url, recordings)
    with running_stack(cfg, tmp) as stack:
        dash_cfg = dataclasses.replace(
            stack.cfg,
            health=dataclasses.replace(stack.cfg.health, enabled=True,
                                       listen=Listen("127.0.0.1", stack.health_port)),
            sidecar=dataclasses.replace(stack.cfg.sidecar, workers=1))
        dash_cfg = with_store(dash_cfg, store_url, recordings)
        with running_dashboard(dash_cfg) as base:
            yield Env(base, stack, store, store_url, dash_cfg, synthetic, recorded, hostile)
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(10000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"script errors on the page: {errors}"


def test_a_call_shows_live_while_it_runs_then_in_history(env: Env, page: Any) -> None:
    page.goto(env.base + "/")
    expect(page.locator("#live-empty")).to_be_visible()
    script = (CallerScript()
              .speak_after_agent_quiet(caller_says("what are your opening hours"))
              .speak_after_agent_quiet(caller_says("goodbye")))
    before = env.stack.records.written
    fut = env.stack.start_call(script, calleridname=HOSTILE, callerid="5550100")
    row = page.locator("#live-calls tbody tr").first
    expect(row).to_be_visible()
    uuid = row.get_attribute("data-uuid")
    assert uuid
    # the caller's name is text, not markup; the duration ticks; someone speaks at some point
    expect(row.locator("td.caller")).to_contain_text(HOSTILE)
    assert page.locator("#pwn").count() == 0
    expect(row.locator("td.duration")).to_have_text(re.compile(r"^0:0[1-9]$"))
    expect(row.locator(".speaking.sp-agent, .speaking.sp-caller")).to_be_visible()
    expect(row).to_contain_text("what are your opening hours")  # the last words, live
    call = fut.result(30)
    assert call.variables["AI_STATUS"] == "COMPLETED"
    # the call leaves the live table and is listed as just ended, linked to its record
    expect(page.locator("#live-calls tbody tr")).to_have_count(0)
    link = page.locator(f'#ended li[data-uuid="{uuid}"] a')
    expect(link).to_be_visible()
    env.stack.wait_records(before + 1)
    wait_for(lambda: env.store.get_call(uuid), 10, "the call in the store")
    link.click()
    expect(page).to_have_url(re.compile(f"/calls/{uuid}$"))
    expect(page.locator("#status")).to_have_text("COMPLETED")
    conv = page.locator("#conversation")
    expect(conv.locator(".caller-bubble").first).to_contain_text("what are your opening hours")
    expect(conv.locator(".agent-bubble").first).to_contain_text("Hi, how can I help?")
    expect(page.locator("#waterfall rect").first).to_be_visible()
    assert page.evaluate("window.__pwned") is None
    # the media plane's recording of this call loads, is as long as its record says, and plays
    stored = env.store.get_call(uuid)
    assert stored["recording"]["seconds"] > 1.0
    assert load_and_play(page) == pytest.approx(stored["recording"]["seconds"], abs=0.05)
    # and in the history, newest first
    page.goto(env.base + "/calls")
    first = page.locator("#history tbody tr").first
    expect(first).to_have_attribute("data-uuid", uuid)
    expect(first.locator("td.caller")).to_contain_text(HOSTILE)
    assert page.evaluate("window.__pwned") is None


def test_detail_plays_the_recording(env: Env, page: Any) -> None:
    rec = env.recorded
    resp = page.goto(f"{env.base}/calls/{rec['uuid']}")
    assert resp.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    expect(page.locator("#conversation .caller-bubble").first).to_be_visible()
    turns_with_stages = sum(1 for t in rec["turns"] if t["stage_ms"])
    expect(page.locator("#waterfall g.turn-row")).to_have_count(turns_with_stages)
    expect(page.locator("#actions tbody tr")).to_have_count(len(rec["actions"]))
    assert load_and_play(page) == pytest.approx(RECORDED_SECONDS, abs=0.05)
    # seeking uses byte ranges
    req = urllib.request.Request(f"{env.base}/recordings/{rec['uuid']}.wav",
                                 headers={"Range": "bytes=44-1043"})
    with urllib.request.urlopen(req, timeout=5) as got:
        assert got.status == 206 and len(got.read()) == 1000
        assert got.headers["content-range"].startswith("bytes 44-1043/")


def test_search_and_filters_narrow_the_history(env: Env, page: Any) -> None:
    page.goto(env.base + "/calls")
    rows = page.locator("#history tbody tr")
    total = env.store.list_calls(limit=1)[1]
    shows_count(page, total)
    # search: a caller name
    page.fill('input[name="q"]', "Grace Hopper")
    page.click('#filters button[type="submit"]')
    want = sum(1 for r in env.known if r["caller_name"] == "Grace Hopper")
    assert 0 < want < total
    shows_count(page, want)
    for text in rows.locator("td.caller").all_inner_texts():
        assert "Grace Hopper" in text
    # words said in a turn
    page.goto(env.base + "/calls?q=internet+is+down")
    want = sum(1 for r in env.known
               if any("internet is down" in t["caller_text"] for t in r["turns"]))
    shows_count(page, want)
    # assistant and outcome
    page.goto(env.base + "/calls")
    page.select_option('select[name="assistant"]', "billing")
    page.select_option('select[name="status"]', "TRANSFERRED")
    page.click('#filters button[type="submit"]')
    want = sum(1 for r in env.known if r["assistant"] == "billing"
               and r["status"] == "TRANSFERRED")
    shows_count(page, want)
    assert rows.count() == want
    for status in rows.locator(".status").all_inner_texts():
        assert status == "TRANSFERRED"
    # a date range: one day
    day = env.synthetic[0]["started_at"][:10]
    page.goto(env.base + "/calls")
    page.fill('input[name="since"]', day)
    page.fill('input[name="until"]', day)
    page.click('#filters button[type="submit"]')
    want = (sum(1 for r in env.known if r["started_at"][:10] == day)
            + sum(1 for c in _real_calls(env) if c["started_at"][:10] == day))
    shows_count(page, want)
    # pages of 50
    page.goto(env.base + "/calls")
    expect(rows).to_have_count(50)
    page.click('a[rel="next"]')
    expect(rows).to_have_count(min(50, total - 50))


def load_and_play(page: Any) -> float:
    """The detail page's recording: waits for its metadata, plays it past 0.2 s, and returns
    its duration (fails on a media error). (page.evaluate, not wait_for_function: the page's
    CSP forbids the eval the latter uses.)"""
    expect(page.locator("audio#recording")).to_be_visible()
    duration = page.evaluate("""() => new Promise((ok, fail) => {
        const a = document.querySelector("audio#recording");
        if (a.readyState >= 1) ok(a.duration);
        a.addEventListener("loadedmetadata", () => ok(a.duration));
        a.addEventListener("error", () => fail(new Error("media error " + a.error.code)));
    })""")
    played = page.evaluate("""() => new Promise((ok, fail) => {
        const a = document.querySelector("audio#recording");
        a.addEventListener("timeupdate", () => { if (a.currentTime > 0.2) ok(a.currentTime); });
        a.play().catch(fail);
    })""")
    assert played > 0.2
    return float(duration)


def shows_count(page: Any, n: int) -> None:
    expect(page.locator("#result-count")).to_have_text(re.compile(rf"^{n} calls?(,|$)"))


def _real_calls(env: Env) -> list[dict[str, Any]]:
    known = {r["uuid"] for r in env.known}
    return [c for c in env.store.list_calls(limit=500)[0] if c["uuid"] not in known]


def test_a_hostile_caller_name_renders_as_text(env: Env, page: Any) -> None:
    page.goto(f"{env.base}/calls/{env.hostile['uuid']}")
    expect(page.locator("#caller")).to_have_text(HOSTILE)
    expect(page.locator("#conversation .caller-bubble").first).to_contain_text(HOSTILE)
    page.goto(env.base + "/calls?q=" + urllib.request.quote(HOSTILE[:20]))
    expect(page.locator("#history td.caller").first).to_contain_text(HOSTILE)
    assert page.locator("#pwn").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_stats_draw_the_charts(env: Env, page: Any) -> None:
    page.goto(env.base + "/stats?hours=72")
    bars = page.locator("#per-hour rect")
    expect(bars.first).to_be_visible()
    titles = page.locator("#per-hour rect title").all_text_contents()
    assert sum(int(t.rsplit(": ", 1)[1]) for t in titles) == env.store.list_calls(limit=1)[1]
    span = {"since": "2000-01-01T00:00:00+00:00", "until": "2100-01-01T00:00:00+00:00"}
    expect(page.locator("#latency tbody tr")).to_have_count(
        len(env.store.latency_by_engine(**span)))


def test_login_is_required_off_loopback_and_a_wrong_password_is_refused(
        env: Env, page: Any) -> None:
    # the policy: any non-loopback address requires the password, and refuses to start
    with pytest.raises(DashboardError, match=PASSWORD_ENV):
        build(env.dash_cfg, env={}, store=object(), host="0.0.0.0", port=9095)
    assert Auth.from_env("admin", "192.0.2.7", 9095, {PASSWORD_ENV: "pw"}).required
    assert not Auth.from_env("admin", "127.0.0.1", 9095, {}).required
    # a dashboard with a password (as it runs off loopback): every page asks for the login
    from media_sidecar.store import open_store

    store = open_store(env.store_url)
    with running_dashboard(env.dash_cfg, store=store,
                           env={PASSWORD_ENV: "correct horse"}) as base:
        page.goto(base + "/calls?q=Grace")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/api/calls", timeout=5)
        assert err.value.code == 401
        page.fill('input[name="user"]', "admin")
        page.fill('input[name="password"]', "wrong")
        page.click('#login button[type="submit"]')
        expect(page.locator("#login-error")).to_have_text("Wrong user or password.")
        expect(page).to_have_url(re.compile(r"/login"))
        assert not [c for c in page.context.cookies() if c["name"] == COOKIE]
        page.fill('input[name="password"]', "correct horse")
        page.click('#login button[type="submit"]')
        expect(page).to_have_url(re.compile(r"/calls\?q=Grace$"))
        expect(page.locator("#history tbody tr").first).to_contain_text("Grace")
        (cookie,) = [c for c in page.context.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.click(".logout button")
        expect(page).to_have_url(re.compile(r"/login$"))
        page.goto(base + "/")
        expect(page).to_have_url(re.compile(r"/login\?next="))
