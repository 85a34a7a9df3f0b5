"""Promotion: after evaluation, decide whether the newly registered model (``challenger``) becomes ``champion``."""
