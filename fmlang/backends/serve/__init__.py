"""Multi-adapter serving: one base model, many LoRA adapters batched in one forward pass.

`config` (ServeConfig), `adapters` (reading peft adapter folders), `lora` (the batched
multi-LoRA layers), `cache` (device ← host ← disk adapter cache), `engine` (continuous
batching) and `tickets` (its requests and events), `server` (the OpenAI-style FastAPI app)
with `protocol` (the bounded wire format), `prompts` (limits and tokenizing), `guards`
(Host, content type, body), `connections` (bounded uvicorn connections) and `openapi`.
Import the submodules directly: this package imports nothing heavy on its own.
"""
