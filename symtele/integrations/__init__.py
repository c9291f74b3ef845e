"""Teleporting inside training frameworks; each integration imports its framework, an optional extra."""
