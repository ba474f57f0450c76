"""The continuous-batching scheduler: many generation requests decoded together, joining and leaving between steps.

``Engine.submit`` queues a request (prompt ids and ``Sampling``); each ``Engine.step`` first admits waiting requests
into free slots (their prompts prefilled together, their first token sampled at once), then runs one decode step for
every active request (one forward pass of a single token per row, through ``lit_gpt.batching.SlotCache``) and sends
each request its new token. A request leaves its slot when it samples one of its stop ids, reaches its ``max_tokens``,
or is cancelled (``Request.cancel``, e.g. when its client went away). ``Engine.start`` runs the steps in a background
thread; tests call ``step`` directly.

Sampling is ``lit_gpt.generate.sample_next`` per row with the request's own temperature, top-k, top-p and
``torch.Generator``, so a request decodes as ``lit_gpt.generate.iter_tokens`` decodes it alone (greedy rows give the
same tokens, within floating-point reordering of the batched matmuls). Torch only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lit_gpt.batching import SlotCache, prefill
from lit_gpt.errors import ConfigError
from lit_gpt.generate import check_sampling, sample_next
from lit_gpt.model import GPT


@dataclass
class Sampling:
    """How one request samples: ``max_tokens`` new tokens at most (>= 1), ``temperature`` (0 is greedy), ``top_k``,
    ``top_p`` (see ``lit_gpt.generate.sample_next``), ``seed`` (None draws one), and ``stop_ids`` that end it."""

    max_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()

    def check(self) -> None:
        """Raise ConfigError for ``max_tokens`` < 1 or bad sampling options (``lit_gpt.generate.check_sampling``)."""
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        check_sampling(self.temperature, self.top_k, self.top_p)


Emit = Callable[[int | None, str | None], None]
"""A request's output: called from the engine's thread with ``(token_id, None)`` for each new token, then once with
``(None, finish_reason)``: ``"stop"`` (a stop id, which is not sent), ``"length"`` (``max_tokens`` reached),
``"cancelled"`` or ``"error: ..."``."""


@dataclass(eq=False)
class Request:
    """One generation request: ``prompt`` ids, its ``Sampling`` and where its tokens go (``emit``)."""

    prompt: list[int]
    sampling: Sampling
    emit: Emit
    generated: int = 0
    last: int = -1
    cancelled: bool = False
    generator: torch.Generator | None = field(default=None, repr=False)

    def cancel(self) -> None:
        """Stop decoding this request at the next step (thread-safe); its slot is freed and it gets ``"cancelled"``."""
        self.cancelled = True


class Engine:
    """Decodes up to ``max_batch_size`` requests together on ``model``; more wait in a queue, first come first served.

    Args:
        vocab_size: ids >= this (a padded vocabulary's rows) are never sampled; default the model's whole vocabulary.
    """

    def __init__(self, model: GPT, max_batch_size: int = 16, vocab_size: int | None = None) -> None:
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model, self.vocab_size = model.eval(), vocab_size
        self.device = model.lm_head.weight.device
        self.cache = SlotCache(model, max_batch_size)
        self.active: list[Request] = []  # active[i] decodes in cache row i
        self.waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def block_size(self) -> int:
        """The most tokens a request may hold: prompt plus generated tokens."""
        return self.model.config.block_size

    def submit(self, prompt: list[int], sampling: Sampling, emit: Emit) -> Request:
        """Queue a request; thread-safe. Returns it (``Request.cancel`` stops it).

        Raises:
            ConfigError: for an empty prompt, bad sampling options, or a prompt and ``max_tokens`` that together
                exceed ``block_size``.
        """
        sampling.check()
        if not prompt:
            raise ConfigError("the prompt has no tokens")
        if len(prompt) + sampling.max_tokens > self.block_size:
            raise ConfigError(
                f"the prompt's {len(prompt)} tokens plus max_tokens {sampling.max_tokens} exceed the model's context "
                f"of {self.block_size} tokens; shorten the prompt or lower max_tokens"
            )
        request = Request(list(prompt), sampling, emit)
        request.generator = torch.Generator(self.device)
        if sampling.seed is None:
            request.generator.seed()
        else:
            request.generator.manual_seed(sampling.seed)
        with self._wake:
            self.waiting.append(request)
            self._wake.notify()
        return request

    def pending(self) -> int:
        """Requests admitted or waiting."""
        return len(self.active) + len(self.waiting)

    @torch.no_grad()
    def step(self) -> None:
        """Admit waiting requests into free slots, then decode one token for every active request."""
        self._drop_cancelled()
        self._admit()
        if not self.active:
            return
        self.cache.make_room()
        self.cache.install()
        tokens = torch.tensor([[r.last] for r in self.active], dtype=torch.long, device=self.device)  # (n, 1)
        input_pos = torch.tensor([self.cache.frontier], device=self.device)
        try:
            hidden = self.model.hidden_states(tokens, input_pos=input_pos)[:, -1]  # (n, C)
        finally:
            self.model.clear_kv_cache()
        self.cache.frontier += 1
        self._deliver(list(self.active), self._sample(hidden, self.active))

    def _admit(self) -> None:
        """Prefill as many waiting requests as there are free slots; each samples its first token."""
        with self._wake:
            free = self.cache.slots - len(self.active)
            joining = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        joining = [r for r in joining if not self._finish_if_cancelled(r)]
        if not joining:
            return
        try:
            hidden, caches = prefill(self.model, [r.prompt for r in joining])
            first = self._sample(hidden, joining)
        except Exception as err:
            for request in joining:
                request.emit(None, _error(err))
            raise
        for i, request in enumerate(joining):
            self.cache.place(caches, i, len(request.prompt))
            self.active.append(request)
        self._deliver(joining, first)

    def _sample(self, hidden: torch.Tensor, requests: list[Request]) -> list[int]:
        """One token per request from final hidden states (n, C), each with the request's own sampling."""
        logits = self.model.head(hidden)  # (n, V)
        if self.vocab_size is not None:
            logits[:, self.vocab_size :] = float("-inf")
        greedy = logits.argmax(dim=-1).tolist()
        out = []
        for i, request in enumerate(requests):
            s = request.sampling
            if s.temperature == 0:
                out.append(greedy[i])
            else:
                token = sample_next(logits[i : i + 1], s.temperature, s.top_k, s.top_p, request.generator)
                out.append(int(token))
        return out

    def _deliver(self, requests: list[Request], tokens: list[int]) -> None:
        """Send each request its token, and free the slots of those that finished."""
        for request, token in zip(requests, tokens):
            request.generated += 1
            request.last = token
            if token in request.sampling.stop_ids:
                self._leave(request, "stop")
                continue
            request.emit(token, None)
            if request.generated >= request.sampling.max_tokens:
                self._leave(request, "length")

    def _leave(self, request: Request, reason: str) -> None:
        row = self.active.index(request)
        moved = self.cache.remove(row)
        if moved is not None:
            self.active[row] = self.active[moved]
        self.active.pop()
        request.emit(None, reason)

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.active if r.cancelled]:
            self._leave(request, "cancelled")

    @staticmethod
    def _finish_if_cancelled(request: Request) -> bool:
        if request.cancelled:
            request.emit(None, "cancelled")
        return request.cancelled

    def start(self) -> None:
        """Run ``step`` in a background thread whenever requests are pending, until ``stop``."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="lit-gpt-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (requests still pending get ``"cancelled"``)."""
        with self._wake:
            self._running = False
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        for request in self.active + list(self.waiting):
            request.emit(None, "cancelled")
        self.active, self.waiting = [], deque()
        self.cache.rows = 0

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._running and not self.active and not self.waiting:
                    self._wake.wait()
                if not self._running:
                    return
            try:
                self.step()
            except Exception as err:  # a failed step fails its requests, not the server
                self._fail_all(err)

    def _fail_all(self, err: Exception) -> None:
        for request in list(self.active):
            self._leave(request, _error(err))
        self.cache.rows = 0


def _error(err: Exception) -> str:
    """The finish reason of a request that a failed step ended: ``"error: "`` and one line about ``err``."""
    return "error: " + " ".join(f"{type(err).__name__}: {err}".split())[:300]
