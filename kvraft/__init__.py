"""kvraft: a replicated key-value store."""
