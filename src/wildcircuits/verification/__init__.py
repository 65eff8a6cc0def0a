"""Test a hypothesis (issue #14)."""
