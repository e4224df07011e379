"""``python -m tests.mocks.openai_audio``: the mock as a process (benchmarks, manual runs)::

    python -m tests.mocks.openai_audio --port 0 --ready FILE [--api-key K]
        [--first-byte-delay S] [--transcribe-delay S] [--send-rate R] [--chunk-ms N]
        [--ms-per-char MS] [--vad-rms R] [--ignore-stdin]

Writes ``{"port": N, "pid": P}`` to ``--ready`` once listening; serves until stdin reaches EOF
(unless ``--ignore-stdin``) or SIGTERM / SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import sys

from tests.mocks.common import add_serving_args, run_process

from .script import AudioScript
from .server import MockAudioServer


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    d = AudioScript()
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.openai_audio",
        description="Mock OpenAI audio REST server (/v1/audio/speech, /v1/audio/transcriptions).",
    )
    add_serving_args(p)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--first-byte-delay", type=float, default=d.first_byte_delay,
                   help="seconds before the speech response head (TTS latency)")
    p.add_argument("--transcribe-delay", type=float, default=d.transcribe_delay,
                   help="seconds before the transcription response head")
    p.add_argument("--send-rate", type=float, default=d.send_rate,
                   help="speech audio pacing, multiple of real time; <= 0 unpaced")
    p.add_argument("--chunk-ms", type=int, default=d.chunk_ms)
    p.add_argument("--ms-per-char", type=float, default=d.ms_per_char)
    p.add_argument("--vad-rms", type=float, default=d.vad_rms)
    args = p.parse_args(argv)
    script = AudioScript(
        first_byte_delay=args.first_byte_delay,
        transcribe_delay=args.transcribe_delay,
        send_rate=args.send_rate,
        chunk_ms=args.chunk_ms,
        ms_per_char=args.ms_per_char,
        vad_rms=args.vad_rms,
    )
    run_process(MockAudioServer(args.api_key, script=script), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
