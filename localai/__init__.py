"""localai: ftflow's local OpenAI-compatible fine-tuning service (a simulator, not a model).

It serves the Files, Uploads, Fine-tuning, Models and Chat Completions endpoints with the
official API's paths, wire shapes and error envelope, so the official `openai` SDK works
against it unchanged. Jobs run on a simulated clock; a "fine-tuned model" answers with the
assistant reply of the most similar training conversation, so a good dataset measurably
changes its answers and a broken one does not. See COVERAGE.md.

Layout: one subpackage per provider's dialect, each with its backend (state, `models.py`),
its routes and its errors: `openai/`, `azure/`, `together/`, `vertex/`, `aws/`, `fireworks/`.
Beside them the machinery they share: `engine/` (files, jobs, models, chat, the simulated
training), `store.py`, `exceptions.py` (OpenAI's envelope, the engine's errors), `dialect.py`
(what the gateway asks of a dialect), `faults.py`, `multipart.py`, `common.py` (ids, clock,
pagination), `admin.py` (the service's own routes), and the assembly: `config.py`, `app.py`
(backends, dialects, gateway), `server.py`. No dialect imports another, and nothing shared
imports a dialect but the assembly (tests/unit/test_localai_layout.py).

It imports nothing of the pipeline (flows, tasks); only ftflow's price catalog and offline
tokenizer.
"""
