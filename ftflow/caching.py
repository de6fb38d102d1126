"""The cache policy of ftflow's tasks.

`RUN_CACHE` is Prefect's default policy (task inputs + task source + flow run id) without the
`resources` argument: when a failed flow run is retried, tasks that already finished in it
are not run again, so a retry after, say, a registry outage neither re-evaluates (paid chat
calls) nor re-polls a finished job. A task's `resources` (ledger, lineage store, provider:
ftflow/run_resources.py) follow from its settings and cannot be hashed, so they are no part
of the key. Across flow runs nothing is cached on purpose: new runs must see new data;
repeated uploads and jobs are prevented by content addressing and idempotency keys instead,
and unchanged data is skipped by the registry check. Tasks whose effect is the point
(writing the run record, raising a gate) use NO_CACHE.
"""

from __future__ import annotations

from prefect.cache_policies import DEFAULT

RUN_CACHE = DEFAULT - "resources"
