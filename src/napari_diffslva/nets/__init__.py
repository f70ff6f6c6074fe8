"""Our own small networks, with state-dict names that match the public checkpoints."""
