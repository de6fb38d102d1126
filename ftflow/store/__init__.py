"""ftflow's own records, in one SQL database (the `registry_url` setting; SQLite by default).

- `ledger.py`: what ftflow made at a provider, for exactly-once: uploaded files, open
  multi-part uploads, fine-tuning jobs, leases, deployments;
- `lineage.py`: what its runs did: run records, promotions, and the flow runs of this machine;
- `database.py`: what both share: one engine per URL, tables created and widened on first use,
  and the upsert every write goes through.

Both are built for a flow run from its settings by ftflow/run_resources.py.
"""
