"""One generation request as the pipeline runs it, and the text stream that follows its tokens.

``GenerationRequest`` carries everything a caller may ask for: the image and the instruction (or,
for LLaVA's worker protocol, a prompt already formatted by the client), the token budget, sampling,
stop strings and a callback that receives the answer text as it grows. ``TextStream`` turns the
generated ids into those text pieces: the pieces add up to the final answer, a stop string ends the
answer before it, and nothing that may still turn into a stop string is sent early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PROMPT_CHARS = 4000  # the longest instruction (one turn) a request may carry


@dataclass
class Sampling:
    """``temperature`` 0 (or None) is greedy; ``top_p`` keeps the smallest set of tokens whose
    probabilities add up to at least ``top_p``; ``seed`` makes a sampled answer repeatable."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature is not None and not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be between 0 and 100, not {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")

    @property
    def greedy(self) -> bool:
        return not self.temperature

    def picker(self):
        """``None`` for greedy (the generation loop's own argmax), else a sampling callable."""
        if self.greedy:
            return None
        from ..model.sampling import SamplePicker

        return SamplePicker(self.temperature, self.top_p, self.seed)


@dataclass
class GenerationRequest:
    image: object  # HxWx3 uint8 array, PIL image, or lisa.images.EncodedImage (decoded when its turn comes)
    prompt: str | None = None  # the user's instruction for this turn
    history: list[tuple[str, str]] | None = None  # earlier (user, answer) turns on the same image
    prompt_text: str | None = None  # a whole prompt formatted by the client, with <image> (LLaVA protocol)
    max_new_tokens: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings
    on_text: Callable[[str], None] | None = None  # receives each new piece of the answer text
    cancelled: Callable[[], bool] | None = None  # polled after every token (a client that went away)
    key: str | None = None  # the image's ``image_key`` when the caller has it, so the image is hashed once

    def __post_init__(self):
        if (self.prompt is None) == (self.prompt_text is None):
            raise ValueError("give exactly one of prompt and prompt_text")
        self.stop = tuple(s for s in (self.stop or ()) if s)

    @property
    def streams(self) -> bool:
        return bool(self.stop) or self.on_text is not None or self.cancelled is not None


class TextStream:
    """The ``on_token`` hook of one generation: ``clean(ids)`` is the answer text for the ids so far
    (the pipeline's own decoding, so the streamed pieces add up to its answer)."""

    def __init__(self, clean: Callable[[list[int]], str], request: GenerationRequest):
        self.clean = clean
        self.stop = request.stop
        self.on_text = request.on_text
        self.cancelled = request.cancelled
        self.ids: list[int] = []
        self.sent = ""
        self.stopped_text: str | None = None  # the answer cut before a stop string

    def _held_back(self, text: str) -> int:
        """Characters at the end of ``text`` not to send yet: an unfinished character, or the start
        of a stop string."""
        n = len(text) - len(text.rstrip("\ufffd"))
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    n = max(n, k)
                    break
        return n

    def _send(self, text: str) -> None:
        if self.on_text is not None and text.startswith(self.sent) and len(text) > len(self.sent):
            piece = text[len(self.sent):]
            self.sent = text
            self.on_text(piece)

    def __call__(self, token_id: int) -> bool:
        self.ids.append(int(token_id))
        text = self.clean(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped_text = text[:cut].rstrip()
            self._send(self.stopped_text)
            return True
        if self.on_text is not None:
            held = self._held_back(text)
            self._send(text[:len(text) - held] if held else text)
        return bool(self.cancelled is not None and self.cancelled())

    def finish(self, answer: str) -> str:
        """Send what is left of the final ``answer`` (or of the answer cut at a stop string)."""
        text = self.stopped_text if self.stopped_text is not None else answer
        self._send(text)
        return text
