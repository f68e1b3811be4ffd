"""The stores and what the private one holds: stores by URL, run locks, the ingest
manifest and the ledger of releases (docs/architecture.md)."""
