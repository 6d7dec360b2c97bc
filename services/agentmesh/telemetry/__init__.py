"""Tracing, metrics and log correlation shared by every agentmesh service."""
