"""``lit-gpt serve``'s HTTP layer: an OpenAI-compatible API and a playground page over ``lit_gpt.engine.Engine``.

- ``lit_gpt.serve.text``: token ids to streamed text, cut at stop strings;
- ``lit_gpt.serve.protocol``: OpenAI request parsing and checking, response and error bodies (standard library only);
- ``lit_gpt.serve.app``: the FastAPI application (routes ``/v1/completions``, ``/v1/chat/completions``,
  ``/v1/models``, ``/health`` and the playground at ``/``, ``static/index.html``).

FastAPI and uvicorn are the optional ``serve`` extra (``pip install -e ".[serve]"``), imported only by ``app`` when
the application is built. The command is ``lit_gpt.cli.serve``.
"""
