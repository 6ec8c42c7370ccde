"""Test support: a real nats-server for the suite, and real service processes."""
