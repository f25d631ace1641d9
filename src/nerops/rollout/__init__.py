"""The rollout's decisions, pure: policy and plan, the health judge, the state machine.

    policy.py      rollouts/policy.yaml: metrics, hard failures, profiles (schema and loading)
    plan.py        one profile as the step plan, its validation and preview
    sequential.py  the anytime-valid sequential tests (numpy, vectorised)
    strata.py      a look's series -> per-interval arrays, candidate against stable in the same intervals
    judge.py       judge(look, plan) -> Verdict, with evidence per metric
    verdicts.py    Look, Verdict, MetricEvidence and the verdicts' precedence
    machine.py     start / advance / command: the state machine (its diagram is in that module)
    actions.py     what the machine asks the flow to do, and the manual verbs

No Prefect, no I/O, no clock: the flows (progressive-rollout, rollback-model, health-sweep) gather
the series, call these and carry out the actions.
"""
