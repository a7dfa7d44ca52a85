"""``predmarket bench``: the engine, the HTTP API, the persister and two reference peers, measured in one run.

Each module has one job: :mod:`options` (what to run and how much), :mod:`runner`
(runs the sections in order and collects :mod:`results`), one module per
workload (:mod:`engine_runs`, :mod:`http_runs`, :mod:`persister_runs`,
:mod:`peer_runs`, with the peers themselves in :mod:`pg_peer` and
:mod:`cas_peer`), :mod:`invariants` (fail loudly after each workload),
:mod:`report` and :mod:`chart` (the table and the PNG).

Nothing is imported here: the spawned worker and load processes import only
the module they run.
"""
