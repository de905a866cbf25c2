"""LangChain integration for oscillink-core (work in progress)."""
