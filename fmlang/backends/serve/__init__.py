"""Multi-adapter serving: one base model, many LoRA adapters batched in one forward pass.

`config` (ServeConfig), `adapters` (reading peft adapter folders), `lora` (the batched
multi-LoRA layers), `cache` (device ← host ← disk adapter cache), `engine` (continuous
batching) and `tickets` (its requests and events), `remote` (the engine in its own
process, behind the `surface` the server uses), `server` (the OpenAI-style FastAPI app)
with `protocol` (the bounded wire format), `prompts` (limits and tokenizing), `guards`
(Host, content type, body), `connections` (bounded uvicorn connections) and `openapi`.
Import the submodules directly: this package imports nothing heavy on its own.

It sets one thing before torch loads: OpenMP's `OMP_WAIT_POLICY=PASSIVE` (unless the
environment says otherwise). By default torch's OpenMP workers spin between parallel
regions; in a server their spinning takes the cores the event loop, the tokenizer thread
and the clients need, and on a busy 2-core machine `benchmarks/serve_load.py` measured
6.6 req/s and 145 server CPU ms per request through HTTP with spinning workers against
113 req/s and 7.8 ms with passive ones (1,000 requests, 64 clients, 2 torch threads). It
takes effect only when torch is not imported yet, as in `fmc serve`.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
