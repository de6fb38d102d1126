"""localai: ftflow's local OpenAI-compatible fine-tuning service (a simulator, not a model).

It serves the Files, Uploads, Fine-tuning, Models and Chat Completions endpoints with the
official API's paths, wire shapes and error envelope, so the official `openai` SDK works
against it unchanged. Jobs run on a simulated clock; a "fine-tuned model" answers with the
assistant reply of the most similar training conversation, so a good dataset measurably
changes its answers and a broken one does not. See COVERAGE.md.

It imports nothing of the pipeline (flows, tasks); only the offline tokenizer of ftflow.
"""
