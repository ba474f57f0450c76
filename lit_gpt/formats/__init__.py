"""The file formats a model is written to and read from, one module per format, each holding its save/load pair:

- ``folder``: our folder (``config.json`` + ``model.safetensors``);
- ``hf_folder``: Hugging Face ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` / ``GPT2LMHeadModel`` folders;
- ``quantized``: our folder of torchao-quantized weights (``config.json`` + ``model.pt``);
- ``training``: the ``lit_gpt`` record of a training ``.ckpt`` (LoRA adapters and base identity, RNG states) and
  sharded checkpoint folders;
- ``peft``: LoRA adapters as a peft folder (save only: peft reads it);
- ``weights`` (a state dict into and out of a ``GPT``, the tied head) and ``files`` (folders, JSON), shared by the
  others.

``lit_gpt.checkpoint`` is the public entry point: it re-exports these pairs and dispatches ``load_checkpoint`` on
what a path holds. No Lightning here; nothing is imported by this package file itself.
"""
