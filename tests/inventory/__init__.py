"""Tests of the central inventory service (inventory/)."""
