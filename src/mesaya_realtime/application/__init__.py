"""Application: use cases and ports. Depends only on the domain."""
