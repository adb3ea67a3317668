"""Routing: which tier and which model answer a prompt (pure logic, no model calls)."""
