"""Chat templates: a list of messages rendered to text and ids exactly as transformers' ``apply_chat_template`` does,
with the token spans of the assistant turns (for a loss on the assistant's tokens only) and the ids that end a turn.

A model's template is the Jinja ``chat_template`` its Hugging Face folder came with (``Tokenizer.chat_template``);
models trained here, and folders without one, get ``CHATML``. Rendering follows transformers 5
(``utils/chat_template_utils.py``): an ``ImmutableSandboxedEnvironment`` with ``trim_blocks``, ``lstrip_blocks`` and
the ``loopcontrols`` extension, a ``{% generation %}`` block that renders its body, the ``tojson`` filter with
transformers' arguments (no HTML escaping), ``raise_exception``, ``strftime_now``, a ``dict`` and a ``namespace`` that
refuse underscore names; the template sees ``messages`` (as plain JSON data, keys whose value is None dropped, the
reasoning aliased to ``reasoning_content`` and ``thinking``), ``tools`` and ``documents`` (None), the tokenizer's named
special tokens (``bos_token``, ``eos_token`` ...), ``add_generation_prompt`` and any keyword given. The rendered text is
encoded with its special tokens parsed and nothing added (``tokenizer(text, add_special_tokens=False)``).

Needs ``jinja2`` (a core dependency).
"""

from __future__ import annotations

import json
from datetime import datetime

from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML (OpenAI's format, as Qwen and SmolLM2 use it): ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message,
and ``<|im_start|>assistant\\n`` as the generation prompt. The template of models trained here."""
CHATML_END = "<|im_end|>"
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _environment():
    """transformers' sandboxed Jinja environment for chat templates (``_cached_compile_jinja_template``)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: renders its body (transformers tracks assistant text with it)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a chat template may not set the namespace attribute {name!r}")

    class Dict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals.update(
        raise_exception=raise_exception,
        strftime_now=lambda format: datetime.now().strftime(format),
        dict=Dict(),
        namespace=Namespace,
    )
    return env


def _plain(value):
    """``value`` as plain JSON data (transformers' ``_plain_template_data``): what the sandbox may see."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _messages(messages) -> list[dict]:
    """Plain message dicts without None values, the reasoning aliased (transformers' ``_normalize_chat_messages``
    and ``_alias_reasoning_fields``).

    Raises:
        ConfigError: if ``messages`` is not a list of dicts.
    """
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise ConfigError(f"a chat is a list of messages (dicts with 'role' and 'content'), got {str(messages)[:100]}")
    out = []
    for message in messages:
        message = _plain({key: value for key, value in message.items() if value is not None})
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


class ChatTemplate:
    """A tokenizer's chat template: messages -> text -> ids, as transformers' ``apply_chat_template``.

    Args:
        tokenizer: encodes the rendered text (special tokens parsed) and gives the named special tokens.
        template: Jinja text; None: ``tokenizer.chat_template``, else ``CHATML``.

    Raises:
        ConfigError: if the template is not valid Jinja.
    """

    def __init__(self, tokenizer: Tokenizer, template: str | None = None) -> None:
        import jinja2

        self.tokenizer = tokenizer
        self.source = template if template is not None else tokenizer.chat_template or CHATML
        try:
            self.template = _environment().from_string(self.source)
        except jinja2.TemplateError as err:
            raise ConfigError(f"the chat template of {tokenizer.name!r} is not valid Jinja: {_one_line(err)}") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = False, **kwargs) -> str:
        """The text of ``messages`` (each ``{"role", "content", ...}``), with the assistant prompt after them when
        ``add_generation_prompt``; ``kwargs`` reach the template (``tools``, ``documents``, ``date_string`` ...).

        Raises:
            ConfigError: when the template fails on these messages (its ``raise_exception``, an undefined value, a
                wrong type), in one line.
        """
        import jinja2

        context = {"tools": None, "documents": None, **self.tokenizer.special_tokens, **_plain(kwargs)}
        try:
            return self.template.render(
                messages=_messages(messages), add_generation_prompt=add_generation_prompt, **context
            )
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise ConfigError(
                f"the chat template of {self.tokenizer.name!r} failed to render these messages "
                f"({type(err).__name__}: {_one_line(err)}); check their roles and order"
            ) from None

    def encode(self, messages: list[dict], add_generation_prompt: bool = False, **kwargs) -> list[int]:
        """Token ids of ``render(...)``, special tokens parsed and nothing added (transformers'
        ``apply_chat_template(..., tokenize=True)``). Raises ConfigError as ``render`` does."""
        return self.tokenizer.encode(self.render(messages, add_generation_prompt, **kwargs), allow_special=True)

    def encode_turns(self, messages: list[dict], **kwargs) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of the whole chat and, for each assistant message, the token span ``(start, end)`` (end exclusive)
        of what it adds to the text: its content and the template's end of turn (``<|im_end|>``, ``<|eot_id|>``,
        ``</s>`` ...), not the header that the generation prompt writes. A token belongs to the span it starts in.

        Spans come from rendering each prefix of the chat: the text before an assistant message is the chat up to it
        with the generation prompt, and its end is the chat through it.

        Raises:
            ConfigError: as ``render`` does, or when the template renders an earlier turn differently once later
                turns follow (as templates that drop past reasoning do), so the turns cannot be told apart.
        """
        text = self.render(messages, **kwargs)
        spans = []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True, **kwargs)
            through = self.render(messages[: i + 1], **kwargs)
            if not (through.startswith(before) and text.startswith(through)):
                raise ConfigError(
                    f"the chat template of {self.tokenizer.name!r} renders turn {i} differently once later turns "
                    "follow, so its assistant tokens cannot be located; train on every token instead"
                )
            spans.append((len(before), len(through)))
        ids, starts = self.tokenizer.encode_with_offsets(text)
        token_spans = []
        for begin, end in spans:
            inside = [j for j, start in enumerate(starts) if begin <= start < end]
            token_spans.append((inside[0], inside[-1] + 1) if inside else (len(ids), len(ids)))
        return ids, token_spans

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end an assistant turn: the tokenizer's ``stop_ids``, and ``<|im_end|>`` when it is one token."""
        end = self.tokenizer.encode(CHATML_END, allow_special=True) if CHATML_END in self.source else []
        return list(dict.fromkeys(self.tokenizer.stop_ids + (end if len(end) == 1 else [])))

    @property
    def stop_texts(self) -> list[str]:
        """Texts that end an assistant turn when no single id does (ChatML's ``<|im_end|>`` for a tokenizer that
        spells it in several tokens, as GPT-2's)."""
        end = self.tokenizer.encode(CHATML_END, allow_special=True) if CHATML_END in self.source else [0]
        return [CHATML_END] if len(end) > 1 else []


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]
