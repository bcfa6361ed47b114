"""Use cases: connect, commands, snapshot cache, event delivery."""
