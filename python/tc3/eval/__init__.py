"""tc3-eval, one concern a module: `metrics` (the metric functions), `run` (the held-out run: models resolved,
answers generated and cached, scored), `report` (its report.json, report.md, report.png), `modes` and
`modes_report` (seen, unseen and grounded scoring against the base, in one report), `faithfulness` (invented
attributions, the hallucination proxy). `tc3.evaluate` is the stable import path of the first three."""
