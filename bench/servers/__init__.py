"""The baselines the gateway is compared with, each a separate server process."""
