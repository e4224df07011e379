"""The inference pool with the real engines (Moonshine, Piper): one process, one sentence
there and back. Needs the ``local`` extra; about 3 s."""

from __future__ import annotations

import os

import numpy as np
import pytest

from media_sidecar.config.schema import SttConfig, TtsConfig
from media_sidecar.speech.pool import EngineSet, InferencePool, run_blocking

pytestmark = pytest.mark.local_models


def test_piper_speaks_and_moonshine_hears_it_in_one_pool_process():
    engines = EngineSet()
    stt, tts = engines.add_stt(SttConfig()), engines.add_tts(TtsConfig())
    pool = InferencePool(engines, processes=1, threads=1)
    pool.start()
    try:
        assert pool.errors == {}
        (pid,) = pool.pids
        assert pid is not None and pid != os.getpid()
        pcm = run_blocking(pool.synthesize_all, "t", tts,
                           "Please transfer me to the billing department.")
        audio = np.frombuffer(pcm, "<i2")
        assert 1.5 < audio.size / 8000 < 4.0  # slin 8 kHz, resampled in the process
        assert np.abs(audio).max() > 3000
        heard = run_blocking(pool.transcribe, "t", stt, pcm, 8000).lower()
        assert "billing" in heard and "transfer" in heard, heard
        # onnxruntime kept to one intra-op thread: a handful of threads, not one per core more
        assert len(os.listdir(f"/proc/{pid}/task")) <= 4
    finally:
        pool.close()
