"""Ingest: a source's tests read date by date, enriched (area, ISP, client) and written to
the private store (docs/architecture.md)."""
