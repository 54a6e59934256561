"""Deferrable sensors: wait on workflows and replication rules through async triggers."""
