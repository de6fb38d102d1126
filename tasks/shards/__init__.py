"""The prepare engine: the input cut into shards, each prepared once by a record pass.

- plan.py: the shards of the input (byte ranges, row groups, whole files), each hashed;
- store.py: each shard's result stored under its bytes, settings and code, reused when unchanged;
- runner.py: where shard tasks run (worker processes, a thread, Dask).

What happens to each record of a shard is the record pass's (tasks/passes/): chat examples or
preference pairs.
"""
