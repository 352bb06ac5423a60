"""tc3-eval's parts beside `tc3.evaluate` (the held-out report): `faithfulness` (invented attributions, the
hallucination proxy), `modes` (seen, unseen and grounded scoring against the base, in one report), `summary` (the
figures a proof records)."""
