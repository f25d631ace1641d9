"""The rollout controller: the I/O around the pure decisions of :mod:`nerops.rollout`.

    records.py     the rollout state record (one JSON file per rollout), its owner and lease
    ownership.py   claiming a rollout (start, resume, take over) by compare-and-append on the ledger
    evidence.py    every look as JSON lines; its sha256 in each ledger decision
    observe.py     a Look from the metrics source and the endpoint
    act.py         carrying out the machine's actions on the endpoint, the ledger and the registry
    run.py         the procedures the flows and the CLI call: begin, look, command, bring back to stable

Rollback never needs the metrics source, the Prefect API or the registry: the endpoint serves from
verified local copies, and the ledger is the record of what was decided.
"""
