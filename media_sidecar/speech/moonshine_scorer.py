"""Acoustic scoring of candidate transcripts with Moonshine's own decoder (teacher forcing).

The free transcript of a short telephone utterance is sometimes other real words ("Sales." heard
as "Feel."), which no text matching can map back. The assistant's own phrases are few and
known, so we ask the recogniser itself: how likely is each candidate text given the caller's
audio? :class:`MoonshineScorer` runs the model's encoder once on the utterance, then the
decoder over every candidate's tokens in batches (teacher forcing), and returns each text's
log-probability given the audio (the sum over its tokens and the end of text, so "sales" and
"sales please" differ). The caller of this module compares a candidate's score with the free
transcript's (:mod:`media_sidecar.brain.vocabulary`). Sums, not means per token: a candidate
that changes one word of a long sentence differs from it by that word's evidence, which a
mean would dilute by the sentence's length.

The model files are the ones ``moonshine-voice`` ships (``assets/tiny-en``):

* ``encoder_model.ort``: ``input_values`` float32 [batch, samples] (16 kHz, -1..1) and
  ``attention_mask`` int64 -> ``last_hidden_state`` [batch, frames, 288];
* ``decoder_model_merged.ort``: ``input_ids`` int64 [batch, tokens], ``encoder_hidden_states``,
  ``encoder_attention_mask``, ``use_cache_branch`` bool [1] and, per layer ``i`` (6),
  ``past_key_values.i.{decoder,encoder}.{key,value}`` float32 [batch, 8, length, 36] ->
  ``logits`` [batch, tokens, 32768] and ``present.i.*``. Without the cache branch the past
  inputs are ignored (their batch may be 0); with it, the encoder's keys and values are taken
  from the past and the decoder's are extended;
* ``tokenizer.bin``: the 32768 pieces of a SentencePiece BPE vocabulary, in id order, each
  as one length byte then its UTF-8 bytes ("▁" marks a word start; ids 3..258 are the bytes
  0x00..0xff for byte fallback). The merge order is the id order (a lower id merges first),
  which is how SentencePiece BPE encodes; start of text is id 1, end of text id 2.

The C library that transcribes (:mod:`.moonshine_stt`) exposes no tokenizer and no scoring,
so this module runs the same two files with onnxruntime (a dependency of moonshine-voice and
piper-tts already). Blocking, CPU-bound; each instance is used under its own lock.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..dsp.resample import Resampler
from .base import SpeechEngineError

__all__ = ["BOS", "EOS", "MoonshineScorer", "Tokenizer", "load_scorer"]

BOS, EOS = 1, 2
MODEL_RATE = 16000
BATCH = 16
"""Candidates per decoder run: bounds the logits array (16 x 20 tokens x 32768 floats is
42 MB)."""
MAX_TOKENS = 48
"""Longer candidate texts are cut (a rule brain's phrase is a few words)."""
WORD_START = "\u2581"


class Tokenizer:
    """SentencePiece BPE over the pieces of ``tokenizer.bin`` (see the module docstring)."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self._ids: dict[str, int] = {}
        for i, p in enumerate(self.pieces):
            if i <= 258:
                continue  # specials and byte pieces
            try:
                self._ids.setdefault(p.decode("utf-8"), i)
            except UnicodeDecodeError:
                continue

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """Raises SpeechEngineError if the file is missing or not in this format."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SpeechEngineError(f"cannot read Moonshine tokenizer {path}: {exc}") from exc
        pieces: list[bytes] = []
        i = 0
        while i < len(data):
            n = data[i]
            if i + 1 + n > len(data):
                raise SpeechEngineError(f"{path}: truncated piece {len(pieces)}")
            pieces.append(data[i + 1:i + 1 + n])
            i += 1 + n
        if len(pieces) < 259 or pieces[:3] != [b"<unk>", b"<s>", b"</s>"]:
            raise SpeechEngineError(f"{path}: not a Moonshine tokenizer ({len(pieces)} pieces)")
        return cls(pieces)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (without start and end of text): words start with "▁"; pairs
        merge lowest id first; a character with no piece becomes its UTF-8 byte pieces."""
        norm = WORD_START + WORD_START.join(text.strip().split())
        if norm == WORD_START:
            return []
        symbols = list(norm)
        ids = self._ids
        # Greedy BPE with a heap of candidate merges (rank = piece id), as SentencePiece does.
        heap: list[tuple[int, int, str, str]] = []
        prev = list(range(-1, len(symbols) - 1))
        nxt = list(range(1, len(symbols) + 1))
        alive = [True] * len(symbols)

        def push(i: int) -> None:
            j = nxt[i]
            if j < len(symbols):
                rank = ids.get(symbols[i] + symbols[j])
                if rank is not None:
                    heapq.heappush(heap, (rank, i, symbols[i], symbols[j]))

        for i in range(len(symbols) - 1):
            push(i)
        while heap:
            _, i, left, right = heapq.heappop(heap)
            j = nxt[i] if i < len(symbols) else len(symbols)
            if not alive[i] or j >= len(symbols) or symbols[i] != left or symbols[j] != right:
                continue  # stale entry
            symbols[i] = left + right
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < len(symbols):
                prev[nxt[j]] = i
            if prev[i] >= 0:
                push(prev[i])
            push(i)
        out: list[int] = []
        for i, s in enumerate(symbols):
            if not alive[i]:
                continue
            piece = ids.get(s)
            if piece is not None:
                out.append(piece)
            else:
                out.extend(3 + b for b in s.encode("utf-8"))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (special tokens dropped)."""
        raw = b"".join(self.pieces[i] for i in ids if i > 2 and i < len(self.pieces))
        return raw.decode("utf-8", errors="replace").replace(WORD_START, " ").strip()


class MoonshineScorer:
    """Teacher-forced scoring of texts against an utterance with one Moonshine model."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        """Load the encoder, the merged decoder and the tokenizer from ``model_dir`` (blocking,
        about 0.3 s). Raises SpeechEngineError if onnxruntime or a file is missing."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise SpeechEngineError(f"acoustic scoring needs onnxruntime: {exc}") from exc
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self._encoder = ort.InferenceSession(str(model_dir / "encoder_model.ort"), opts,
                                                 providers=["CPUExecutionProvider"])
            self._decoder = ort.InferenceSession(str(model_dir / "decoder_model_merged.ort"),
                                                 opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / NoSuchFile
            raise SpeechEngineError(f"cannot load Moonshine model in {model_dir}: {exc}") from exc
        self.tokenizer = Tokenizer.load(model_dir / "tokenizer.bin")
        past = [i for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self._past_names = [i.name for i in past]
        self._layers = len(past) // 4
        shape = past[0].shape
        self._heads, self._head_dim = int(shape[1]), int(shape[3])
        self._present_names = [o.name for o in self._decoder.get_outputs()
                               if o.name.startswith("present.")]
        self._decoder_presents = [n for n in self._present_names if ".decoder." in n]
        self.lock = threading.Lock()

    # -- model steps ---------------------------------------------------------------------------

    def encode_audio(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        """The encoder's output for int16 mono ``pcm`` at ``rate`` Hz, [1, frames, dim]."""
        samples = np.asarray(pcm)
        if rate != MODEL_RATE:
            r = Resampler(rate, MODEL_RATE)
            samples = np.concatenate([r.process(samples.astype(np.int16)), r.flush()])
        audio = (samples.astype(np.float32) / 32768.0)[None, :]
        mask = np.ones(audio.shape, dtype=np.int64)
        out = self._encoder.run(None, {"input_values": audio, "attention_mask": mask})
        return np.asarray(out[0])

    def _start(self, hidden: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Decode the start token: log-probabilities of the first token [V] and the cache."""
        empty = np.zeros((0, self._heads, 1, self._head_dim), dtype=np.float32)
        feeds: dict[str, Any] = {n: empty for n in self._past_names}
        feeds.update(input_ids=np.array([[BOS]], dtype=np.int64),
                     encoder_hidden_states=hidden,
                     encoder_attention_mask=np.ones(hidden.shape[:2], dtype=np.int64),
                     use_cache_branch=np.array([False]))
        logits, *present = self._decoder.run(None, feeds)
        cache = {n.replace("present.", "past_key_values."): v
                 for n, v in zip(self._present_names, present, strict=True)}
        return _log_softmax(logits[0, -1]), cache

    def _run(self, hidden: np.ndarray, cache: dict[str, np.ndarray], seqs: list[list[int]],
             *, extend: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feed each token sequence after ``cache`` (batch 1, tiled): logits [n, width, V] and,
        with ``extend`` (one sequence), the cache extended by it."""
        n = len(seqs)
        width = max(len(s) for s in seqs)
        ids = np.full((n, width), EOS, dtype=np.int64)
        for k, s in enumerate(seqs):
            ids[k, :len(s)] = s
        feeds: dict[str, Any] = {name: np.repeat(v, n, axis=0) if n > 1 else v
                                 for name, v in cache.items()}
        feeds.update(input_ids=ids, encoder_hidden_states=np.repeat(hidden, n, axis=0),
                     encoder_attention_mask=np.ones((n, hidden.shape[1]), dtype=np.int64),
                     use_cache_branch=np.array([True]))
        names = ["logits", *self._decoder_presents] if extend else ["logits"]
        logits, *present = self._decoder.run(names, feeds)
        new = dict(cache)
        for name, v in zip(self._decoder_presents, present, strict=False):
            new[name.replace("present.", "past_key_values.")] = v
        return logits, new

    # -- public --------------------------------------------------------------------------------

    def score(self, pcm: np.ndarray, rate: int, texts: Sequence[str]) -> list[float]:
        """Each text's log-probability (natural log, the sum over its tokens and the end of
        text) given the utterance ``pcm`` (int16 mono at ``rate`` Hz), then one more value:
        the log-probability of the model's own greedy transcript of the audio here (the best
        it finds alone with this front end; the reference a candidate is compared with). An
        empty text scores the end of text alone.

        The first text is the reference (the free transcript): the others are decoded from
        the end of the tokens they share with it, so a candidate that changes one word of a
        long sentence costs only the rest of the sentence. Blocking; thread-safe
        (serialised). Raises SpeechEngineError if the model fails."""
        seqs = [self.tokenizer.encode(t)[:MAX_TOKENS] for t in texts]
        with self.lock:
            try:
                return self._score(pcm, rate, seqs)
            except SpeechEngineError:
                raise
            except Exception as exc:  # onnxruntime's own errors
                raise SpeechEngineError(f"Moonshine scoring failed: {exc}") from exc

    def _score(self, pcm: np.ndarray, rate: int, seqs: list[list[int]]) -> list[float]:
        hidden = self.encode_audio(pcm, rate)
        first, start = self._start(hidden)
        limit = max([len(s) for s in seqs] + [0]) + 8
        _, own = self._greedy(hidden, first, start, min(MAX_TOKENS, limit))
        if not seqs:
            return [own]
        ref = seqs[0]
        # rows[i]: log-probabilities of the token after ref[:i] (rows[0] is after the start).
        rows = [first]
        ref_cache = start
        if ref:
            logits, ref_cache = self._run(hidden, start, [ref], extend=True)
            rows += list(_log_softmax(logits[0]))
        ref_sums = np.concatenate(
            [[0.0], np.cumsum([rows[i][t] for i, t in enumerate(ref)])]) if ref else [0.0]
        scores: list[float] = [0.0] * len(seqs)
        groups: dict[int, list[int]] = {}
        for k, s in enumerate(seqs):
            p = _common_prefix(s, ref)
            if p == len(s):  # the reference itself, or a prefix of it: nothing to decode
                scores[k] = float(ref_sums[p]) + float(rows[p][EOS])
            else:
                groups.setdefault(p, []).append(k)
        for p, members in groups.items():
            cache = {n: (v[:, :, :1 + p] if ".decoder." in n else v)
                     for n, v in ref_cache.items()}
            for i in range(0, len(members), BATCH):
                chunk = members[i:i + BATCH]
                tails = [seqs[k][p:] for k in chunk]
                logits, _ = self._run(hidden, cache, tails)
                for row, k in enumerate(chunk):
                    tail = tails[row]
                    lp = _log_softmax(logits[row, :len(tail)])
                    total = (float(ref_sums[p]) + float(rows[p][tail[0]])
                             + float(lp[np.arange(len(tail)), [*tail[1:], EOS]].sum()))
                    scores[k] = total
        return [*scores, own]

    def _greedy(self, hidden: np.ndarray, first: np.ndarray, cache: dict[str, np.ndarray],
                max_tokens: int) -> tuple[list[int], float]:
        """The greedy decoding from the start: its tokens (end of text included when reached)
        and their summed log-probability."""
        tokens = [int(first.argmax())]
        total = float(first[tokens[0]])
        while tokens[-1] != EOS and len(tokens) < max_tokens:
            logits, cache = self._run(hidden, cache, [[tokens[-1]]], extend=True)
            lp = _log_softmax(logits[0, -1])
            tokens.append(int(lp.argmax()))
            total += float(lp[tokens[-1]])
        return tokens, total

    def greedy(self, pcm: np.ndarray, rate: int, max_tokens: int = MAX_TOKENS) -> str:
        """The model's own greedy transcript with this front end (for tests and diagnosis)."""
        with self.lock:
            hidden = self.encode_audio(pcm, rate)
            first, cache = self._start(hidden)
            tokens, _ = self._greedy(hidden, first, cache, max_tokens)
        return self.tokenizer.decode(tokens)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


_CACHE: dict[str, MoonshineScorer] = {}
_CACHE_LOCK = threading.Lock()


def load_scorer(model: str, threads: int = 1) -> MoonshineScorer:
    """The scorer of Moonshine ``model`` ("tiny-en"), loaded once per process (blocking).
    Raises SpeechEngineError if moonshine-voice or the model's files are missing."""
    with _CACHE_LOCK:
        scorer = _CACHE.get(model)
        if scorer is not None:
            return scorer
        try:
            from moonshine_voice.utils import get_model_path
        except ImportError as exc:
            raise SpeechEngineError(f"Moonshine is not available ({exc})") from exc
        path = Path(get_model_path(model))
        scorer = _CACHE[model] = MoonshineScorer(path, threads)
        return scorer
