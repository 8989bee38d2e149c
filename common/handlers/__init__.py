"""Ignite handlers (``attach(engine)``) shared by the bundles' workflows."""
