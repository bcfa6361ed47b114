"""Infrastructure: adapters for REST, JWT, Kafka and metrics."""
