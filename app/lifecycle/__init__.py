"""Model residency: the state machine, the model manager actor, the idle reaper and eviction."""
