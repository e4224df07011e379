"""The dashboard's pure parts: the login policy and its cookie, the history's filters, the
call detail's conversation, the charts' geometry, where the live calls are read, and the
media worker's ``/calls`` document. (The pages themselves are tested in a real browser:
tests/browser.)"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from fastagi_server.dashboard import charts
from fastagi_server.dashboard.auth import (
    PASSWORD_ENV,
    SECRET_ENV,
    Auth,
    DashboardError,
    LoginThrottle,
    is_loopback,
    safe_next,
)
from fastagi_server.dashboard.live import worker_sources
from fastagi_server.dashboard.views import Filters, conversation, digits, pager
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Listen, MediaHost
from media_sidecar.server.health import HealthEndpoints, SidecarHealth
from media_sidecar.server.registry import CallRegistry

CFG = load_config()


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("127.9.9.9", True),
                                            ("::1", True), ("[::1]", True), ("localhost", True),
                                            ("0.0.0.0", False), ("::", False),
                                            ("192.0.2.1", False), ("example.org", False)])
def test_loopback_addresses(host, loop):
    assert is_loopback(host) is loop


def test_a_login_is_required_off_loopback_and_it_will_not_start_without_a_password():
    with pytest.raises(DashboardError, match=f"0.0.0.0:9095.*{PASSWORD_ENV}"):
        Auth.from_env("admin", "0.0.0.0", 9095, {})
    assert Auth.from_env("admin", "0.0.0.0", 9095, {PASSWORD_ENV: "pw"}).required
    assert not Auth.from_env("admin", "127.0.0.1", 9095, {}).required
    assert Auth.from_env("admin", "127.0.0.1", 9095, {PASSWORD_ENV: "pw"}).required


def test_the_password_check_and_the_signed_session():
    auth = Auth.from_env("admin", "0.0.0.0", 9095, {PASSWORD_ENV: "s3cret", SECRET_ENV: "k"})
    assert auth.check("admin", "s3cret")
    assert not auth.check("admin", "s3cre") and not auth.check("root", "s3cret")
    assert "s3cret" not in repr(auth) and "k'" not in repr(auth)
    cookie = auth.issue(now=1000.0)
    assert auth.verify(cookie, now=1001.0)
    assert not auth.verify(cookie, now=1000.0 + 13 * 3600)  # expired
    body, mac = cookie.split(".")
    assert not auth.verify(body[:-2] + "xx." + mac, now=1001.0)  # tampered
    assert not auth.verify("", now=1001.0) and not auth.verify("garbage", now=1001.0)
    # another secret (another start without AGI_VOICE_DASHBOARD_SECRET) does not accept it
    other = Auth.from_env("admin", "0.0.0.0", 9095, {PASSWORD_ENV: "s3cret"})
    assert not other.verify(cookie, now=1001.0)
    # the same secret does (sessions survive a restart)
    again = Auth.from_env("admin", "0.0.0.0", 9095, {PASSWORD_ENV: "s3cret", SECRET_ENV: "k"})
    assert again.verify(cookie, now=1001.0)
    header = auth.cookie_header(cookie)
    assert "HttpOnly" in header and "SameSite=Strict" in header


def test_failed_logins_are_throttled_per_address():
    now = [1000.0]
    t = LoginThrottle(limit=3, window=600.0, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        assert t.retry_after("192.0.2.1") == 0
        t.failed("192.0.2.1")
    assert t.retry_after("192.0.2.1") == 600.0  # locked out from the first failure's window
    assert t.retry_after("192.0.2.2") == 0  # another address is not
    now[0] += 599.0
    assert t.retry_after("192.0.2.1") == pytest.approx(1.0)
    now[0] += 1.0
    assert t.retry_after("192.0.2.1") == 0  # the window passed
    t.failed("192.0.2.1")
    t.succeeded("192.0.2.1")  # a success clears the address
    t.failed("192.0.2.1"), t.failed("192.0.2.1")
    assert t.retry_after("192.0.2.1") == 0
    # bounded: a flood of addresses forgets the oldest
    for i in range(10):
        t.failed(f"198.51.100.{i}")
    assert len(t._failures) == 2


async def test_the_login_answers_429_once_an_address_failed_too_often(tmp_path):
    import httpx

    from fastagi_server.dashboard.app import create_app
    from fastagi_server.dashboard.live import LiveFeed
    from media_sidecar.store import open_store

    auth = Auth.from_env("admin", "0.0.0.0", 9095, {PASSWORD_ENV: "s3cret"})
    store = open_store(f"sqlite:///{tmp_path / 'calls.db'}")
    app = create_app(store=store, auth=auth, feed=LiveFeed([]), recordings_dir=tmp_path,
                     throttle=LoginThrottle(limit=2, window=600.0))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        wrong = {"user": "admin", "password": "nope", "next": "/"}
        assert (await client.post("/login", data=wrong)).status_code == 401
        assert (await client.post("/login", data=wrong)).status_code == 401
        locked = await client.post("/login", data={**wrong, "password": "s3cret"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 500
        assert "Too many failed logins" in locked.text
    store.close()


@pytest.mark.parametrize(("target", "want"), [("/calls?q=x", "/calls?q=x"), ("//evil.example", "/"),
                                              ("https://evil.example/", "/"), ("/\\evil", "/"),
                                              ("", "/")])
def test_after_the_login_only_a_local_path(target, want):
    assert safe_next(target) == want


def test_filters_from_the_query_string():
    f = Filters.from_query({"q": " Grace ", "assistant": "billing", "status": "FAILED",
                            "since": "2026-12-01", "until": "2026-12-05", "page": "3"})
    args = f.store_args()
    assert args == {"q": "Grace", "assistant": "billing", "status": "FAILED",
                    "since": "2026-12-01T00:00:00+00:00", "until": "2026-12-06T00:00:00+00:00",
                    "limit": 50, "offset": 100}
    assert f.query(page=4) == ("q=Grace&assistant=billing&status=FAILED&since=2026-12-01&"
                               "until=2026-12-05&page=4")
    bad = Filters.from_query({"since": "yesterday", "until": "2026-13-40", "page": "-2"})
    assert (bad.since, bad.until, bad.page) == ("", "", 1)
    p = pager(Filters(page=2), 120)
    assert (p["pages"], p["first"], p["last"], p["prev"], p["next"]) == (3, 51, 100, "", "page=3")


def test_the_conversation_in_time_order():
    call = {
        "turns": [
            {"index": 0, "trigger": "start", "agent_text": "Hello", "first_frame_sent": 0.4},
            {"index": 1, "trigger": "speech", "caller_text": "billing please", "speech_end": 3.0,
             "agent_text": "Transferring you", "first_frame_sent": 3.6, "interrupted": True,
             "heard_text": "Transf"},
        ],
        "actions": [{"t": 3.8, "kind": "transfer", "destination": "billing"}],
        "dtmf": [{"t": 2.0, "digit": "5"}],
    }
    items = conversation(call)
    assert [(i["kind"], i["t"]) for i in items] == [
        ("agent", 0.4), ("dtmf", 2.0), ("caller", 3.0), ("agent", 3.6), ("action", 3.8)]
    assert items[3]["interrupted"] and items[3]["heard"] == "Transf"


def test_a_records_plain_digits_take_their_times_from_dtmf_at():
    # as the media worker writes a record (JSON lines, webhooks): digits, and their times beside
    call = {"turns": [{"index": 0, "trigger": "start", "agent_text": "Hi", "first_frame_sent": 0.3}],
            "dtmf": ["1", "#"], "dtmf_at": [1.5, 2.25]}
    assert digits(call) == [{"t": 1.5, "digit": "1"}, {"t": 2.25, "digit": "#"}]
    assert [(i["kind"], i["t"]) for i in conversation(call)] == [
        ("agent", 0.3), ("dtmf", 1.5), ("dtmf", 2.25)]
    # a record from before dtmf_at existed: the digits, with no time (and not in the timeline)
    old = {"dtmf": ["7"]}
    assert digits(old) == [{"t": None, "digit": "7"}] and conversation(old) == []


def test_the_waterfall_segments_follow_the_stages():
    turns = [{"index": 1, "stage_ms": {"stt": 200, "llm_first_token": 500, "first_sentence": 600,
                                       "tts_first_audio": 800, "first_frame": 820}},
             {"index": 2, "stage_ms": {}},
             {"index": 3, "stage_ms": {"tts_first_audio": 100, "first_frame": 410}}]
    w = charts.waterfall(turns, width=410)
    assert [r["index"] for r in w["rows"]] == [1, 3]
    first = w["rows"][0]["segments"]
    assert [(s["stage"], s["start"], s["end"]) for s in first] == [
        ("stt", 0.0, 200.0), ("llm_first_token", 200.0, 500.0), ("first_sentence", 500.0, 600.0),
        ("tts_first_audio", 600.0, 800.0), ("first_frame", 800.0, 820.0)]
    assert first[-1]["x"] + first[-1]["w"] == pytest.approx(410, abs=0.2)  # the slowest fills it
    assert w["rows"][0]["total"] == 820


def test_calls_per_hour_stacks_outcomes_and_keeps_empty_hours():
    since = dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)
    rows = [{"hour": "2026-12-05T10:00:00+00:00", "status": "COMPLETED", "count": 3},
            {"hour": "2026-12-05T10:00:00+00:00", "status": "FAILED", "count": 1},
            {"hour": "2026-12-05T12:00:00+00:00", "status": "COMPLETED", "count": 2}]
    b = charts.calls_per_hour(rows, since, since + dt.timedelta(hours=3), size=(300, 100))
    assert [bar["total"] for bar in b["bars"]] == [4, 0, 2]
    assert b["top"] == 4 and b["total"] == 6
    tall = b["bars"][0]["segments"]
    assert [(s["status"], s["h"]) for s in tall] == [("COMPLETED", 75.0), ("FAILED", 25.0)]
    assert tall[-1]["y"] == 0.0


def test_the_workers_the_live_page_reads():
    cfg = dataclasses.replace(
        CFG, sidecar=dataclasses.replace(CFG.sidecar, workers=3),
        fastagi=dataclasses.replace(CFG.fastagi, media=(
            MediaHost("ws://10.0.0.5:9093/control", "10.0.0.5:9092", name="far",
                      health_url="http://10.0.0.5:9094/"),
            MediaHost("ws://10.0.0.6:9093/control", "10.0.0.6:9092"))))
    assert [(s.name, s.url) for s in worker_sources(cfg)] == [
        ("0", "http://127.0.0.1:9094/calls"), ("1", "http://127.0.0.1:9104/calls"),
        ("2", "http://127.0.0.1:9114/calls"), ("far", "http://10.0.0.5:9094/calls")]
    off = dataclasses.replace(cfg, health=dataclasses.replace(cfg.health, listen=Listen(
        "127.0.0.1", 0)))
    assert [s.name for s in worker_sources(off)] == ["far"]


class FakeCall:
    def __init__(self, snap=None, fail=False):
        self.snap = snap
        self.fail = fail

    def snapshot(self):
        if self.fail:
            raise RuntimeError("boom")
        return self.snap


async def test_a_worker_answers_calls_with_its_live_calls():
    reg = CallRegistry(CFG)
    snap = {"uuid": "a", "assistant": "demo", "worker": "2", "last_caller": "hi",
            "last_agent": "hello", "speaking": "agent"}
    reg.attach("a", FakeCall(snap))  # type: ignore[arg-type]
    reg.attach("b", FakeCall(fail=True))  # a broken snapshot leaves that call out
    health = SidecarHealth()
    health.registry = reg
    resp = await HealthEndpoints(health, None).handle("GET", "/calls")
    assert resp.status == 200
    assert json.loads(resp.body) == {"worker": "2", "calls": [snap]}
    # records without transcripts: the live view has no words either
    quiet = CallRegistry(dataclasses.replace(CFG, sidecar=dataclasses.replace(
        CFG.sidecar, records=dataclasses.replace(CFG.sidecar.records, transcripts=False))))
    quiet.attach("a", FakeCall(snap))  # type: ignore[arg-type]
    assert quiet.snapshot() == [{**snap, "last_caller": "", "last_agent": ""}]
