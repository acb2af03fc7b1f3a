"""Limits that keep one tenant from starving the rest: request-rate buckets per key, tenant and
division."""
