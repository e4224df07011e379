"""After the tier (this module runs last): Asterisk's own log holds no WARNING or ERROR caused
by agi-voice. Every line tolerated is listed here with the reason."""

from __future__ import annotations

import re

from .peer import AsteriskPeer
from .product import ProductProcess

TOLERATED = [
    # the test instance has no music-on-hold files (none are needed): logged once at start
    (r"res_musiconhold\.c: No music on hold classes configured", "instance start-up"),
    # test_shipped_dialplan_falls_back_to_the_operator_when_agi_voice_is_down stops agi-voice
    # on purpose to show the shipped dialplan's fallback: AGI() logs that it cannot connect
    (r"res_agi\.c: Connecting to '127\.0\.0\.1:\d+' failed for url 'agi://127\.0\.0\.1:\d+/agent"
     r"': Connection refused", "agi-voice stopped on purpose"),
    (r"res_agi\.c: Couldn't connect to any host\.  FastAGI failed\.", "agi-voice stopped on purpose"),
    # AudioSocket() logs this when its channel goes away under it: the caller hanging up
    # (test_caller_hangs_up_mid_reply...) or someone else's AMI Redirect
    # (test_third_party_redirect...). agi-voice's own transfers never do it: they hand the call
    # back and Goto the destination (fastagi.transfer: auto)
    (r"app_audiosocket\.c: Failed to receive frame from channel 'Local/s@av-caller-"
     r"(hangup-mid-reply|redirect|worker\d+)-\d+-", "the caller hung up / a third party redirected"),
    # ... and this when a frame agi-voice sent arrives as the caller's channel goes away
    # (test_concurrent_calls_are_spread_over_the_media_workers: both callers hang up while the
    # agent's silence frames still stream)
    (r"app_audiosocket\.c: Failed to forward frame from AudioSocket server '127\.0\.0\.1:\d+' "
     r"to channel 'Local/s@av-caller-worker\d+-\d+-", "the caller hung up"),
]


def test_asterisk_logged_no_warning_or_error_caused_by_agi_voice(
        asterisk: AsteriskPeer, agi_voice: ProductProcess) -> None:
    problems = [ln for ln in asterisk.problems()
                if not any(re.search(pat, ln) for pat, _why in TOLERATED)]
    assert not problems, "\n".join(problems)
    assert not agi_voice.tracebacks(), "\n".join(agi_voice.lines[-200:])
