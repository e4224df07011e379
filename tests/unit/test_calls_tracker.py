"""The control plane's call tracker: AMI events to calls, and transfers only where allowed."""

from __future__ import annotations

import asyncio

from fastagi_server.calls import CallTracker, TrackedCall
from media_sidecar.config.loader import load_config
from media_sidecar.protocol import control as c

ASSISTANT = load_config().assistants[0]
UUID = "0b6f5c1e-4f7e-4a56-9d39-1d7c8d1c2e3f"


class Sent:
    def __init__(self) -> None:
        self.messages: list[c.ControlMessage] = []

    async def send(self, msg: c.ControlMessage) -> bool:
        self.messages.append(msg)
        return True


class Ami:
    """Records AMI actions; ``fail`` makes Redirect raise like an AMI error response."""

    def __init__(self, connected: bool = True, fail: bool = False) -> None:
        self.connected = connected
        self.fail = fail
        self.actions: list[tuple] = []

    async def redirect(self, channel, context, exten, priority):
        if self.fail:
            raise RuntimeError("Channel does not exist: " + channel)
        self.actions.append(("Redirect", channel, context, exten, priority))

    async def setvar(self, channel, variable, value):
        self.actions.append(("Setvar", channel, variable, value))


def tracker(ami: Ami | None = None) -> tuple[CallTracker, Sent, TrackedCall]:
    sent = Sent()
    t = CallTracker(sent, ami)
    call = TrackedCall(uuid=UUID, channel="PJSIP/100-0000001", uniqueid="1795267856.1",
                       assistant=ASSISTANT)
    t.add(call)
    return t, sent, call


def snapshot(event: str, **fields: str) -> dict[str, str]:
    return {"Event": event, "Channel": "PJSIP/100-0000001", "Uniqueid": "1795267856.1", **fields}


def test_hangup_and_dtmf_events_reach_the_call():
    t, sent, _ = tracker(Ami())

    async def main():
        await t.on_ami_event(snapshot("DTMFEnd", Digit="5", DurationMs="120", Direction="Received"))
        await t.on_ami_event(snapshot("DTMFEnd", Digit="6", Direction="Sent"))  # our own: ignored
        await t.on_ami_event({"Event": "DTMFEnd", "Uniqueid": "other.1", "Digit": "7"})
        await t.on_ami_event(snapshot("Hangup", Cause="16", **{"Cause-txt": "Normal Clearing"}))

    asyncio.run(main())
    assert sent.messages == [c.Dtmf(uuid=UUID, digit="5", source="ami"),
                             c.Hangup(uuid=UUID, cause="Normal Clearing")]


def test_transfer_to_an_allowed_destination_sets_variables_then_redirects():
    ami = Ami()
    t, _, call = tracker(ami)
    dest = ASSISTANT.destination("billing")
    req = c.TransferRequest(UUID, "billing", dest.context, dest.exten, dest.priority)
    res = asyncio.run(t.transfer(req))
    assert res.ok and res.method == "redirect" and call.redirected_to == "billing"
    assert ami.actions == [
        ("Setvar", call.channel, "AI_STATUS", "TRANSFERRED"),
        ("Setvar", call.channel, "AI_TRANSFER_TO", "billing"),
        ("Redirect", call.channel, "from-internal", "2001", "1"),
    ]


def test_transfer_to_a_destination_not_allowed_is_refused_and_nothing_is_redirected():
    ami = Ami()
    t, _, call = tracker(ami)
    for req in (c.TransferRequest(UUID, "pstn", "from-trunk", "0900123", "1"),
                # a known key with a tampered target is refused too
                c.TransferRequest(UUID, "billing", "from-internal", "9999", "1")):
        res = asyncio.run(t.transfer(req))
        assert not res.ok and res.method == "refused"
    assert ami.actions == [] and call.redirected_to == ""


def test_transfer_without_ami_or_with_ami_failing_falls_back_to_the_dialplan():
    for ami in (None, Ami(connected=False), Ami(fail=True)):
        t, _, call = tracker(ami)
        d = ASSISTANT.destination("sales")
        res = asyncio.run(t.transfer(c.TransferRequest(UUID, "sales", d.context, d.exten, d.priority)))
        assert not res.ok and res.method == "dialplan" and call.redirected_to == ""


def test_disposition_after_agi_closed():
    ami = Ami()
    t, _, call = tracker(ami)
    call.agi_closed = True

    async def main():
        waiter = asyncio.create_task(t.resolve_disposition(call, time_limit=2))
        await asyncio.sleep(0)
        await t.on_ami_event(snapshot("Newexten", Context="from-internal", Exten="0"))
        return await waiter

    assert asyncio.run(main()) == "redirect"
    assert ("Setvar", call.channel, "AI_STATUS", "TRANSFERRED") in ami.actions
    t2, sent2, call2 = tracker(Ami())
    call2.agi_closed = True
    asyncio.run(t2.on_ami_event(snapshot("Hangup", Cause="16")))
    assert call2.disposition == "hangup" and sent2.messages == []  # AGI side already done


def test_hangup_request_before_the_agi_closed_means_a_hangup_whatever_the_h_extension_does():
    """Found on the real Asterisk: a caller's hang-up runs the h extension (a Newexten after
    the AGI closed) and was taken for a third-party redirect."""
    t, _, call = tracker(Ami())

    async def main():
        await t.on_ami_event(snapshot("HangupRequest", Cause="16"))
        call.agi_closed = True
        await t.on_ami_event(snapshot("Newexten", Exten="h", Application="UserEvent"))
        return await t.wait_disposition(call, 0.1)

    assert asyncio.run(main()) == "hangup"


def test_h_extension_alone_is_a_hangup_and_a_newexten_elsewhere_a_redirect():
    async def run(exten: str) -> str:
        t, _, call = tracker(Ami())
        call.agi_closed = True
        await t.on_ami_event(snapshot("Newexten", Exten=exten, Context="from-internal"))
        return await t.wait_disposition(call, 0.1)

    assert asyncio.run(run("h")) == "hangup"
    assert asyncio.run(run("0")) == "redirect"


def test_soft_hangup_request_after_the_agi_closed_is_a_hangup():
    t, _, call = tracker(Ami())

    async def main():
        call.agi_closed = True
        await t.on_ami_event(snapshot("SoftHangupRequest", Cause="16"))
        await t.on_ami_event(snapshot("Newexten", Exten="0"))
        return await t.wait_disposition(call, 0.1)

    assert asyncio.run(main()) == "hangup"


def test_handback_versions():
    from fastagi_server.calls import supports_handback

    yes = ["20.14.0", "20.17.1", "21.9.0", "21.12.2", "22.4.0", "22.10.1", "23.0.0", "24.1.0"]
    no = ["18.26.0", "20.13.0", "21.8.1", "22.3.0", "20.7-cert5", "", "GIT-master", "22"]
    assert [v for v in yes if not supports_handback(v)] == []
    assert [v for v in no if supports_handback(v)] == []


def test_transfer_mode_picks_goto_redirect_or_dialplan():
    def run(mode: str, handback: bool, ami: Ami | None) -> tuple[c.TransferResult, TrackedCall]:
        sent = Sent()
        t = CallTracker(sent, ami, transfer_mode=mode)
        call = TrackedCall(uuid=UUID, channel="PJSIP/100-0000001", uniqueid="1795267856.1",
                           assistant=ASSISTANT, handback=handback)
        t.add(call)
        dest = ASSISTANT.destination("sales")
        assert dest is not None
        req = c.TransferRequest(uuid=UUID, destination="sales", context=dest.context,
                                exten=dest.exten, priority=dest.priority)
        return asyncio.run(t.transfer(req)), call

    res, call = run("auto", True, Ami())
    assert (res.ok, res.method, call.goto) == (True, "goto", ("from-internal", "2002", "1"))
    res, call = run("auto", True, None)  # no AMI needed for a goto
    assert (res.ok, res.method) == (True, "goto")
    ami = Ami()
    res, call = run("auto", False, ami)  # an Asterisk that hangs up on 00 00 00
    assert (res.ok, res.method, call.goto) == (True, "redirect", None)
    assert ami.actions[-1][0] == "Redirect"
    res, call = run("redirect", True, Ami())
    assert res.method == "redirect" and call.goto is None
    res, call = run("goto", False, None)
    assert res.method == "goto"
    res, call = run("auto", False, None)
    assert (res.ok, res.method) == (False, "dialplan")
