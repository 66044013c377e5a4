"""Multi-adapter serving: one base model, many LoRA adapters batched in one forward pass.

`config` (ServeConfig), `adapters` (reading peft adapter folders), `lora` (the batched
multi-LoRA layers), `cache` (device ← host ← disk adapter cache), `engine` (continuous
batching), `server` (the OpenAI-style FastAPI app). Import the submodules directly: this
package imports nothing heavy on its own.
"""
