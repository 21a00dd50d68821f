"""Which model versions serve and how that changes: the version table and routing, loading and vetting,
polling, shadows, policies and the model store, over the core."""
