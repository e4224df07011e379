"""The media-worker settings and the control-link additions for placement, as pure units:
the port scheme (worker I: each port + I * worker_port_step), the targets the FastAGI side
places on (local workers, then ``fastagi.media``), validation errors that name the key, the
optional ``offer.worker`` (left out while empty, so older sidecars still decode offers), the
``load`` report, and what a reload keeps."""

from __future__ import annotations

import json
import uuid as uuidlib

import pytest

from media_sidecar.config.loader import ConfigError, parse_config
from media_sidecar.config.reload import for_reload
from media_sidecar.config.workers import media_targets, worker_config, worker_count
from media_sidecar.protocol import control as c

TAIL = "assistants: {a: {provider: echo}}\n"
UUID = str(uuidlib.uuid4())


def cfg_of(text: str):
    return parse_config(text + TAIL, "agi-voice.yaml")


def test_worker_i_listens_on_each_port_plus_i_steps():
    cfg = cfg_of("sidecar: {workers: 3}\n")
    assert worker_count(cfg) == 3
    assert worker_config(cfg, 0) is cfg  # worker 0 is the sidecar as configured
    w2 = worker_config(cfg, 2)
    assert (w2.sidecar.audiosocket.port, w2.sidecar.control.port, w2.health.listen.port) == (
        9112, 9113, 9114)
    assert [(t.name, t.control_url, t.audiosocket_address) for t in media_targets(cfg)] == [
        ("0", "ws://127.0.0.1:9093/control", "127.0.0.1:9092"),
        ("1", "ws://127.0.0.1:9103/control", "127.0.0.1:9102"),
        ("2", "ws://127.0.0.1:9113/control", "127.0.0.1:9112")]


def test_addresses_given_for_asterisk_and_fastagi_shift_the_same_way():
    cfg = cfg_of("fastagi: {audiosocket_address: '10.0.0.5:9092', "
                 "control_url: 'ws://10.0.0.5:9093/control'}\n"
                 "sidecar: {workers: 2, worker_port_step: 100}\n")
    (_, one) = media_targets(cfg)
    assert (one.control_url, one.audiosocket_address) == ("ws://10.0.0.5:9193/control",
                                                          "10.0.0.5:9192")


def test_media_hosts_come_after_the_local_workers_and_zero_local_workers_is_allowed():
    text = ("sidecar: {workers: 0}\nfastagi:\n  media:\n"
            "    - {control_url: 'ws://10.0.0.7:9093/control', audiosocket_address: "
            "'10.0.0.7:9092', name: b0}\n"
            "    - {control_url: 'ws://10.0.0.8:9093/control', audiosocket_address: "
            "'10.0.0.8:9092'}\n")
    targets = media_targets(cfg_of(text))
    assert [(t.name, t.local) for t in targets] == [("b0", False), ("10.0.0.8:9093", False)]


@pytest.mark.parametrize(("text", "path", "says"), [
    ("sidecar: {workers: 0}\n", "sidecar.workers", "no call could be served"),
    ("sidecar: {workers: -1}\n", "sidecar.workers", "expected 0..1024"),
    ("sidecar: {worker_port_step: 0}\n", "sidecar.worker_port_step", "expected 1..10000"),
    ("sidecar: {workers: 2, audiosocket: {port: 65530}}\n", "sidecar.audiosocket.port",
     "worker 1 would listen on port 65540"),
    ("fastagi: {media: [{control_url: 'http://x:1/control', audiosocket_address: 'x:2'}]}\n",
     "fastagi.media[0].control_url", "expected ws://HOST:PORT/control"),
    ("fastagi: {media: [{control_url: 'ws://x:1/control', audiosocket_address: 'x'}]}\n",
     "fastagi.media[0].audiosocket_address", "expected HOST:PORT"),
    ("fastagi: {media: [{audiosocket_address: 'x:2'}]}\n",
     "fastagi.media[0].control_url", "required key is missing"),
])
def test_bad_worker_settings_name_the_key(text, path, says):
    with pytest.raises(ConfigError) as err:
        cfg_of(text)
    assert err.value.path == path and says in str(err.value)


def test_a_reload_keeps_the_workers_and_the_media_hosts():
    running = cfg_of("sidecar: {workers: 2}\n")
    new = cfg_of("sidecar: {workers: 4, worker_port_step: 20}\nfastagi: {media: [{control_url: "
                 "'ws://h:1/control', audiosocket_address: 'h:2'}]}\n")
    effective, changed = for_reload(running, new)
    assert (effective.sidecar.workers, effective.sidecar.worker_port_step,
            effective.fastagi.media) == (2, 10, ())
    assert {"sidecar.workers", "sidecar.worker_port_step", "fastagi.media"} <= set(changed)


def test_offer_worker_is_left_out_while_empty_so_an_older_sidecar_decodes_it():
    plain = json.loads(c.encode(c.Offer(uuid=UUID, assistant="a")))
    assert "worker" not in plain
    named = c.Offer(uuid=UUID, assistant="a", worker="1")
    assert json.loads(c.encode(named))["worker"] == "1"
    assert c.decode(c.encode(named)) == named


def test_load_and_watch_load_are_new_message_types_of_version_1():
    assert c.PROTOCOL_VERSION == 1
    report = c.Load(worker="0", calls=3, offers=1, max_calls=100, draining=False)
    assert c.decode(c.encode(report)) == report
    assert c.decode(c.encode(c.WatchLoad())) == c.WatchLoad()
    with pytest.raises(c.ControlError, match="unknown fields"):
        c.decode('{"type":"load","cpu":0.5}')
