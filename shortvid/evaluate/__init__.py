"""Evaluation jobs over a trained run: the competition's metrics on a split through the serving path
(`runner.evaluate_run`) and the bad-case report (`analyze.analyze_run`). The metrics themselves are
`shortvid.metrics`, the decision policy `shortvid.policy`."""
