"""Domain: the catalogue, messages, queries and identities. Imports no framework."""
