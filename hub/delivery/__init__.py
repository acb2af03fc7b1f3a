"""Delivery: routing, pacing and submitting messages to SMS gateways; receipts and replies."""
