"""Handlers: what the gateway does with each kind of incoming domain event."""
