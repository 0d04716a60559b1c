"""Serving backends: what runs a revision's model server (see base.ServingBackend)."""
