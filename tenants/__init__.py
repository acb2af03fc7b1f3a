"""The tenancy package: the tenant tree, API keys, scopes, authentication and guards.

`hub` imports `tenants`; `tenants` never imports `hub` (tests/unit/test_layering.py checks it).
"""
