"""hub: one shared SMS service for a province's organization departments."""
