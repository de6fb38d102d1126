"""The simulated fine-tuning engine every dialect drives: files, jobs, models, chat.

It keeps OpenAI's semantics and wire shapes (OpenAI's API is the one the others were built
after); each dialect gives its backend its own instance over its own store and maps what
differs at its edge (azure/models.py: job states, model names, quotas).

files.py          Files: stored on disk, fine-tune files checked line by line
training_data.py  the line-by-line check of chat examples and preference pairs
validation.py     the create-job request against the spec's schema
jobs.py           the job lifecycle on a simulated clock (events, checkpoints, trained tokens)
models.py         base models (the price catalog's) and the fine-tuned models jobs create
chat.py           chat completions: base models answer generically, tuned ones from their data
tokens.py         the provider's token counting (the cookbook's rule)
"""
