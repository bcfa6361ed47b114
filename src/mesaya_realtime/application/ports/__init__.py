"""Ports: the small interfaces the application needs and infrastructure implements."""
