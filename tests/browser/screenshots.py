"""Screenshots of the dashboard for the README and docs: ``python -m tests.browser.screenshots``.

Fills a temp call store with synthetic calls (tests/browser/fill.py) and one with a
recording, runs the product on loopback (tests/browser/harness.py) with two emulated calls in
progress for the live page, and writes ``docs/screenshots/{live,history,detail,stats,login}.png``
with Debian's Chromium. Needs /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from fastagi_server.dashboard.auth import PASSWORD_ENV
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Listen
from media_sidecar.store import open_store
from tests.browser.fill import fill, record, write_wav
from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    running_dashboard,
    running_stack,
    with_store,
)
from tests.fakes import caller_says

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--calls", type=int, default=240)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'calls.db'}"
        store = open_store(url)
        now = dt.datetime.now(dt.UTC)
        fill(store, args.calls, hours=24, now=now)
        # a call with a tool call, a keypress and a transfer, for the detail page
        shown = next(r for r in (record(i, now=now, hours=0.5) for i in range(5000, 6000))
                     if r["status"] == "TRANSFERRED" and r["dtmf"]
                     and any(a["kind"] == "tool" for a in r["actions"]))
        shown["caller_name"] = "Ada Lovelace"
        wav = tmp / "recordings" / now.strftime("%Y-%m-%d") / f"{shown['uuid']}.wav"
        write_wav(wav, shown["duration"])
        shown["recording"] = {"path": str(wav), "seconds": shown["duration"], "rate": 8000,
                              "channels": 2}
        store.save(shown)
        base_cfg = load_config()
        cfg = with_store(base_cfg, url, tmp / "recordings")
        with running_stack(cfg, tmp) as stack:
            dash_cfg = dataclasses.replace(
                stack.cfg, health=dataclasses.replace(
                    stack.cfg.health, enabled=True, listen=Listen("127.0.0.1", stack.health_port)),
                sidecar=dataclasses.replace(stack.cfg.sidecar, workers=1))
            dash_cfg = with_store(dash_cfg, url, tmp / "recordings")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                with running_dashboard(dash_cfg) as base:
                    script = (CallerScript()
                              .speak_after_agent_quiet(caller_says("what are your opening hours"))
                              .speak_after_agent_quiet(caller_says("goodbye")))
                    calls = [stack.start_call(script, calleridname=name, callerid=number)
                             for name, number in (("Grace Hopper", "5550101"),
                                                  ("Alan Turing", "5550102"))]
                    page.goto(base + "/")
                    page.locator("#live-calls tbody tr").nth(1).wait_for()
                    page.get_by_text("what are your opening hours").first.wait_for(timeout=20000)
                    time.sleep(0.5)  # the durations tick once more
                    page.screenshot(path=str(args.out / "live.png"))
                    for call in calls:
                        call.result(60)
                    page.goto(base + "/calls")
                    page.screenshot(path=str(args.out / "history.png"))
                    page.goto(f"{base}/calls/{shown['uuid']}")
                    page.screenshot(path=str(args.out / "detail.png"), full_page=True)
                    page.goto(base + "/stats")
                    page.screenshot(path=str(args.out / "stats.png"), full_page=True)
                with running_dashboard(dash_cfg, store=open_store(url),
                                       env={PASSWORD_ENV: "demo"}) as base:
                    page.goto(base + "/")
                    page.screenshot(path=str(args.out / "login.png"))
                browser.close()
        store.close()
    for name in ("live", "history", "detail", "stats", "login"):
        print(args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
