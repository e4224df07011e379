"""A speech engine module for the inference pool's tests: no model, each request says what to
do. Imported by name in the pool's processes (``module="tests.unit.inference_fake"``).

- The STT or TTS config's ``model`` / ``voice`` is a log file: each process appends what it
  runs, one line each (``<pid> stt <tag>``, ``<pid> tts <tag>``, ``<pid> said <text>``,
  ``<pid> chunk <tag> <i>``), so a test sees the order requests ran in. ``broken`` fails to load.
- STT: the first three samples are (tag, milliseconds to take, 1 to crash the process); the
  text is ``stt <tag>``.
- TTS: the text is ``<tag> [sleep=<s>] [chunks=<n>] [crash]``: ``n`` chunks (default 2) of
  0.1 s at 8 kHz, chunk ``i`` filled with the value ``i + 1``, each taking ``s`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np

from media_sidecar.config.schema import SttConfig, TtsConfig
from media_sidecar.speech.base import SpeechEngineError

CHUNK = 800


def _log(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {line}\n")


class Stt:
    name = "fake-stt"

    def __init__(self, log: str) -> None:
        self.log = log

    def warm(self) -> None:
        _log(self.log, "warm stt")

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        tag, ms, crash = (int(x) for x in pcm[:3])
        _log(self.log, f"stt {tag}")
        if crash:
            os._exit(3)
        time.sleep(ms / 1000)
        return f"stt {tag}"


class Tts:
    name = "fake-tts"
    rate = 8000

    def __init__(self, log: str) -> None:
        self.log = log

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        tag, *opts = text.split()
        args = dict((o.split("=", 1) + ["1"])[:2] for o in opts)
        _log(self.log, f"tts {tag}")
        _log(self.log, f"said {text}")
        if "crash" in args:
            os._exit(3)
        for i in range(int(args.get("chunks", 2))):
            time.sleep(float(args.get("sleep", 0)))
            _log(self.log, f"chunk {tag} {i}")
            yield np.full(CHUNK, i + 1, dtype=np.int16)


def set_threads(threads: int) -> None:
    os.environ["FAKE_THREADS"] = str(threads)


def make_stt(cfg: SttConfig, *, load: bool = True) -> Stt:
    if cfg.model == "broken":
        raise SpeechEngineError("fake STT model 'broken' does not load")
    return Stt(cfg.model)


def make_tts(cfg: TtsConfig, *, load: bool = True) -> Tts:
    if cfg.voice == "broken":
        raise SpeechEngineError("fake voice 'broken' does not load")
    return Tts(cfg.voice)
