"""Cohort metadata: scan discovery, harmonisation to the canonical schema, manifest."""
