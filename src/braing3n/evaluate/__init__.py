"""Evaluation: linear probes, encoder comparison, FID, guidance, memorisation, longitudinal."""
